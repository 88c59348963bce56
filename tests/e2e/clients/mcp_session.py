"""One MCP session over Streamable HTTP with the official `mcp` SDK, as an agent would:
initialize, list the tools, call `echo` with personal values, then call a tool the
policy denies. Prints what the client saw as one JSON line on stdout.

    python mcp_session.py URL BEARER_TOKEN MESSAGE DENIED_TOOL
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client


async def main(url, token, message, denied_tool):
    seen = {}
    http = create_mcp_http_client(headers={"authorization": f"Bearer {token}"})
    async with http:
        async with streamable_http_client(url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                seen["tools"] = sorted(t.name for t in tools.tools)
                echoed = await session.call_tool("echo", {"message": message})
                seen["echo"] = "".join(c.text for c in echoed.content if getattr(c, "text", None))
                seen["echo_is_error"] = bool(echoed.is_error)
                try:
                    denied = await asyncio.wait_for(session.call_tool(denied_tool, {}), timeout=20)
                    seen["denied"] = {"is_error": bool(denied.is_error), "text": "".join(getattr(c, "text", "") or "" for c in denied.content)}
                except Exception as e:  # a refused HTTP request surfaces as an exception
                    seen["denied"] = {"exception": type(e).__name__, "text": str(e)}
    print(json.dumps(seen))


asyncio.run(main(*sys.argv[1:5]))
