// Lesson 13's chat service, driven by the Vercel AI SDK's own client code (npm `ai`, pinned in
// package.json): DefaultChatTransport sends and resumes, readUIMessageStream assembles the
// message, exactly as useChat would in a browser. Run by tests/test_13_ai_sdk_client.py,
// which starts the service and passes its address in CHAT_SERVICE_URL:
//     CHAT_SERVICE_URL=http://127.0.0.1:8000 node --test ai_sdk_client.test.mjs
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { DefaultChatTransport, readUIMessageStream } from "ai";

const base = process.env.CHAT_SERVICE_URL;
if (!base) throw new Error("set CHAT_SERVICE_URL to the chat service's address");
const api = `${base}/api/chat`;
// One connection per request. The test's servers close a keep-alive connection after 1 s
// idle (so that they stop quickly); undici, behind Node's fetch, keeps one for 4 s and
// would send the next POST on a connection the server has just closed ("fetch failed:
// other side closed"; a POST is not retried). A server's idle timeout must outlast its
// clients' (uvicorn's default, 5 s, does); here the client simply does not reuse them.
const headers = { connection: "close" };

const userMessage = (text) => ({
  id: randomUUID(),
  role: "user",
  parts: [{ type: "text", text }],
});

// "1, 2, 3, ..., n," (stopped while counting) or "1, 2, ..., n." (the end): no gap, no repeat.
function assertCountsFromOne(text) {
  const numbers = text.replace(/[.,]$/, "").split(", ").map(Number);
  assert.deepEqual(numbers, numbers.map((_, index) => index + 1), `not a clean count: ${text}`);
  return numbers.length;
}

// Every chunk of a stream, and the message readUIMessageStream builds from them.
async function readAll(stream) {
  const [forChunks, forMessage] = stream.tee();
  const chunks = [];
  const collecting = (async () => {
    for await (const chunk of forChunks) chunks.push(chunk);
  })();
  const errors = [];
  let message;
  for await (const snapshot of readUIMessageStream({
    stream: forMessage,
    onError: (error) => errors.push(error.message),
  })) {
    message = snapshot;
  }
  await collecting;
  return { chunks, message, errors, text: textOf(message) };
}

const textOf = (message) =>
  (message?.parts ?? []).filter((part) => part.type === "text").map((part) => part.text).join("");

// Reads chunks until `enough(text)` holds, then hands back the reader (still locked).
async function readUntil(stream, enough) {
  const reader = stream.getReader();
  let text = "";
  while (!enough(text)) {
    const { value, done } = await reader.read();
    assert.ok(!done, `the stream ended early, after: ${text}`);
    if (value.type === "text-delta") text += value.delta;
  }
  return { reader, text };
}

async function stop(chatId) {
  const response = await fetch(`${api}/${chatId}/stop`, { method: "POST", headers });
  assert.equal(response.status, 200);
  return (await response.json()).stopped;
}

function send(transport, chatId, messages, abortSignal = undefined) {
  return transport.sendMessages({
    chatId,
    messages,
    trigger: "submit-message",
    messageId: undefined,
    abortSignal,
  });
}

test("a whole answer, then a second turn that carries the history", async () => {
  const transport = new DefaultChatTransport({ api, headers });
  const chatId = randomUUID();
  const first = userMessage("count to 5");
  const answer = await readAll(await send(transport, chatId, [first]));

  assert.deepEqual(
    answer.chunks.map((chunk) => chunk.type),
    ["start", "text-start", ...Array(5).fill("text-delta"), "text-end", "finish"],
  );
  assert.equal(answer.text, "1, 2, 3, 4, 5.");
  assert.match(answer.message.id, /^msg_/);
  assert.equal(answer.message.parts[0].state, "done");
  assert.deepEqual(answer.errors, []);

  // The SDK sends the assistant message back as it built it (with `state`, ids...).
  const history = [first, answer.message, userMessage("count to 3")];
  const second = await readAll(await send(transport, chatId, history));
  assert.equal(second.text, "1, 2, 3.");
  assert.notEqual(second.message.id, answer.message.id);
});

test("204 (null) once the answer has been delivered, and for an unknown chat", async () => {
  const transport = new DefaultChatTransport({ api, headers });
  const chatId = randomUUID();
  await readAll(await send(transport, chatId, [userMessage("hello")]));
  assert.equal(await transport.reconnectToStream({ chatId }), null);
  assert.equal(await transport.reconnectToStream({ chatId: randomUUID() }), null);
});

test("a dropped connection is not a stop: reconnectToStream replays the answer and goes on", async () => {
  const transport = new DefaultChatTransport({ api, headers });
  const chatId = randomUUID();
  const dropped = new AbortController();
  const stream = await send(transport, chatId, [userMessage("count forever")], dropped.signal);
  const { reader, text: before } = await readUntil(stream, (text) => text.split(",").length > 5);
  dropped.abort(); // the page is reloaded: the connection goes, the answer does not
  await reader.cancel().catch(() => {});

  const resumed = await transport.reconnectToStream({ chatId });
  assert.ok(resumed, "the running answer can be resumed");
  // From its start (resumeStreamIsReplay): the first chunk is `start` again.
  const [counting, rest] = resumed.tee();
  const { reader: again, text: replayed } = await readUntil(
    counting,
    (text) => text.split(",").length > before.split(",").length + 5,
  );
  assert.ok(replayed.startsWith(before), `the replay starts over: ${replayed}`);
  assert.equal(await stop(chatId), true);
  again.releaseLock(); // not cancel(): a tee branch's cancel() waits for the other branch

  const answer = await readAll(rest);
  assert.equal(answer.chunks[0].type, "start");
  assert.equal(answer.chunks.at(-1).type, "abort");
  assert.ok(assertCountsFromOne(answer.text) > before.split(",").length);
});

test("Stop ends the stream cleanly with an abort chunk; stopping again is harmless", async () => {
  const transport = new DefaultChatTransport({ api, headers });
  const chatId = randomUUID();
  const [counting, rest] = (await send(transport, chatId, [userMessage("count forever")])).tee();
  const { reader } = await readUntil(counting, (text) => text.split(",").length > 3);
  assert.equal(await stop(chatId), true);
  reader.releaseLock();

  const answer = await readAll(rest);
  assert.deepEqual(
    answer.chunks.slice(-2).map((chunk) => chunk.type),
    ["text-end", "abort"],
  );
  assertCountsFromOne(answer.text);
  assert.deepEqual(answer.errors, []);
  assert.equal(await stop(chatId), false);
  assert.equal(await transport.reconnectToStream({ chatId }), null);
});

test("an upstream 429 reaches the SDK as an error part with a message safe to show", async () => {
  const transport = new DefaultChatTransport({ api, headers, body: { simulate: "rate-limit" } });
  const answer = await readAll(await send(transport, randomUUID(), [userMessage("hello")]));
  assert.deepEqual(answer.errors, ["The model is busy. Try again in a moment."]);
  assert.equal(answer.chunks.at(-1).type, "error");
});
