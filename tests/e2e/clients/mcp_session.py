"""One MCP session over Streamable HTTP with the official `mcp` SDK, as an agent would:
initialize, list the tools, resources and prompts, call `echo` with personal values, then
call a tool the policy denies (and, if given, read a resource it denies). Prints what the client saw as one JSON line on stdout: for the denied call,
the exception the SDK raised and, for a JSON-RPC error, its code and data (for a refused
`initialize`, only that).

    python mcp_session.py URL BEARER_TOKEN MESSAGE DENIED_TOOL [DENIED_RESOURCE_URI]
"""

import asyncio
import json
import sys

from mcp import ClientSession
from mcp.client.streamable_http import create_mcp_http_client, streamable_http_client
from mcp.shared.exceptions import MCPError


async def main(url, token, message, denied_tool, denied_resource=None):
    seen = {"session_ids": []}

    async def note_session(response):
        # The session the server assigned, as every later request of the client names it.
        sid = response.headers.get("mcp-session-id")
        if sid and sid not in seen["session_ids"]:
            seen["session_ids"].append(sid)

    http = create_mcp_http_client(headers={"authorization": f"Bearer {token}"})
    http.event_hooks["response"].append(note_session)
    async with http:
        async with streamable_http_client(url, http_client=http) as (read, write, *_):
            async with ClientSession(read, write) as session:
                try:
                    await session.initialize()
                except MCPError as e:  # refused from the start: nothing else to try
                    seen["initialize_error"] = {"code": e.code, "data": e.data}
                    print(json.dumps(seen))
                    return
                tools = await session.list_tools()
                seen["tools"] = sorted(t.name for t in tools.tools)
                resources = await session.list_resources()
                seen["resources"] = sorted(str(r.uri) for r in resources.resources)
                prompts = await session.list_prompts()
                seen["prompts"] = sorted(p.name for p in prompts.prompts)
                if denied_resource:
                    try:
                        await session.read_resource(denied_resource)
                        seen["denied_read"] = {"read": True}
                    except MCPError as e:
                        seen["denied_read"] = {"exception": type(e).__name__, "code": e.code, "data": e.data}
                echoed = await session.call_tool("echo", {"message": message})
                seen["echo"] = "".join(c.text for c in echoed.content if getattr(c, "text", None))
                seen["echo_is_error"] = bool(echoed.is_error)
                try:
                    denied = await asyncio.wait_for(session.call_tool(denied_tool, {}), timeout=20)
                    seen["denied"] = {"is_error": bool(denied.is_error), "text": "".join(getattr(c, "text", "") or "" for c in denied.content)}
                except MCPError as e:  # a JSON-RPC error answer
                    seen["denied"] = {"exception": type(e).__name__, "code": e.code, "message": e.message, "data": e.data}
                except Exception as e:  # anything else, e.g. a broken transport
                    seen["denied"] = {"exception": type(e).__name__, "text": str(e)}
                # The session goes on after the refusal.
                again = await session.call_tool("echo", {"message": "still here"})
                seen["echo_after"] = "".join(c.text for c in again.content if getattr(c, "text", None))
    print(json.dumps(seen))


asyncio.run(main(*sys.argv[1:6]))
