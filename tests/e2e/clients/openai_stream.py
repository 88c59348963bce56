"""Streams a chat completion with the official `openai` client, as an agent would, and
prints what the client assembled as one JSON line on stdout.

    python openai_stream.py BASE_URL API_KEY CHUNK_SIZE

The API key is Airlock's bearer token: the client sends it as `Authorization: Bearer`.
"""

import json
import sys
import time

from openai import OpenAI

base_url, api_key, chunk_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=60)
started = time.monotonic()
first = None
text = []
chunks = 0
stream = client.chat.completions.create(
    model="demo",
    messages=[{"role": "user", "content": "Tell me about our customers."}],
    stream=True,
    extra_body={"chunk_size": chunk_size, "delay_ms": 15},
)
for chunk in stream:
    chunks += 1
    for choice in chunk.choices:
        if choice.delta and choice.delta.content:
            if first is None:
                first = time.monotonic() - started
            text.append(choice.delta.content)
total = time.monotonic() - started
print(json.dumps({"text": "".join(text), "chunks": chunks, "first_s": first, "total_s": total}))
