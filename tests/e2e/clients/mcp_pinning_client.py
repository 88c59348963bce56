"""One MCP session over Streamable HTTP with the official `mcp` SDK: initialize, list the
tools, then call one. Prints what the client saw as one JSON line: the tools listed (name
and description) and the call's result, or the JSON-RPC error the SDK raised for it.

    python mcp_pinning_client.py URL BEARER_TOKEN TOOL ARGUMENTS_JSON
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from mcp.shared.exceptions import MCPError


async def main(url, token, tool, arguments):
    seen = {}
    http = create_mcp_http_client(headers={"authorization": f"Bearer {token}"})
    async with http:
        async with streamable_http_client(url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                seen["tools"] = {t.name: t.description for t in tools.tools}
                try:
                    result = await asyncio.wait_for(session.call_tool(tool, json.loads(arguments)), timeout=20)
                    seen["call"] = {
                        "is_error": bool(result.is_error),
                        "text": "".join(getattr(c, "text", "") or "" for c in result.content),
                    }
                except MCPError as e:  # a JSON-RPC error answer
                    seen["call"] = {"exception": type(e).__name__, "code": e.code, "message": e.message, "data": e.data}
    print(json.dumps(seen))


asyncio.run(main(*sys.argv[1:5]))
