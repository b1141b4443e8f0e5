"""Lesson 10's relay: overhead against reading the fake LLM server directly, and 100 chats.

Run: .venv/bin/python benchmarks/llm_relay.py
Targets (issue 5): relay overhead < 10 % on tokens/s and time to first token; 100
simultaneous chats through one relay process complete with every token delivered.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import httpx
import openai

from course_app.checking import load_exercise
from course_app.fake_openai import create_app as create_fake_llm
from course_app.fake_openai import llm_settings
from course_app.fake_openai.app import reply_to, tokenize
from course_app.runtime import LessonServer, set_pace

PROMPT = "count to 200"
EXPECTED_TOKENS = len(tokenize(reply_to(PROMPT)))
ROUNDS = 7


async def direct(settings) -> tuple[float, float, int]:
    client = openai.AsyncOpenAI(base_url=settings.base_url, api_key=settings.api_key, max_retries=0)
    started = time.perf_counter()
    first, count = None, 0
    # The relay asks the Responses API, so the direct reading does too.
    stream = await client.responses.create(model=settings.model, input=PROMPT, stream=True)
    async for event in stream:
        if event.type == "response.output_text.delta":
            first = first or time.perf_counter() - started
            count += 1
    await client.close()
    return first or 0.0, time.perf_counter() - started, count


async def through_relay(http: httpx.AsyncClient, url: str) -> tuple[float, float, int]:
    body = {"messages": [{"role": "user", "content": PROMPT}]}
    started = time.perf_counter()
    first, count, event = None, 0, ""
    async with http.stream("POST", url + "/chat/stream", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "token":
                json.loads(line[5:])
                first = first or time.perf_counter() - started
                count += 1
    return first or 0.0, time.perf_counter() - started, count


async def run(fake: LessonServer, relay: LessonServer) -> None:
    settings = llm_settings(fake.url)
    direct_runs = [await direct(settings) for _ in range(ROUNDS)]
    async with httpx.AsyncClient(timeout=120) as http:
        relay_runs = [await through_relay(http, relay.url) for _ in range(ROUNDS)]

    def summary(runs: list[tuple[float, float, int]]) -> tuple[float, float]:
        ttft = statistics.median(r[0] for r in runs)
        rate = statistics.median(r[2] / r[1] for r in runs)
        return ttft, rate

    d_ttft, d_rate = summary(direct_runs)
    r_ttft, r_rate = summary(relay_runs)
    print(f"{EXPECTED_TOKENS} tokens per answer, median of {ROUNDS}")
    print(f"  direct: first token {d_ttft * 1000:6.1f} ms, {d_rate:7.1f} tokens/s")
    print(f"  relay:  first token {r_ttft * 1000:6.1f} ms, {r_rate:7.1f} tokens/s")
    print(f"  relay overhead: first token {(r_ttft / d_ttft - 1) * 100:+.1f} %, "
          f"throughput {(1 - r_rate / d_rate) * 100:+.1f} %")  # fmt: skip

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=200)) as http:
        started = time.perf_counter()
        results = await asyncio.gather(*(through_relay(http, relay.url) for _ in range(100)))
        elapsed = time.perf_counter() - started
    complete = sum(r[2] == EXPECTED_TOKENS for r in results)
    print(f"  100 simultaneous chats: {complete}/100 complete with all {EXPECTED_TOKENS} tokens "
          f"in {elapsed:.1f} s")  # fmt: skip


def main() -> None:
    set_pace(0.1)  # 5 ms per token: fast enough to measure, slow enough to be realistic
    solution = load_exercise("10_llm_streaming", "solutions")
    with LessonServer(create_fake_llm(), name="bench-llm") as fake:
        with LessonServer(solution.create_app(llm_settings(fake.url)), name="bench-relay") as relay:
            asyncio.run(run(fake, relay))


if __name__ == "__main__":
    main()
