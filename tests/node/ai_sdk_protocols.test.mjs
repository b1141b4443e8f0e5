// Lesson 13's protocol demo (course_app/demos/ai_sdk_protocols.py) against the AI SDK's own
// chat (npm `ai`, pinned in package.json), through chat_in_node.mjs: what a useChat page
// shows when server and client speak the same wire, and when they do not. Run by
// tests/test_13_ai_sdk_protocols.py, which passes the demo's address in PROTOCOLS_URL:
//     PROTOCOLS_URL=http://127.0.0.1:8000 node --test ai_sdk_protocols.test.mjs
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";

import { DefaultChatTransport, readUIMessageStream } from "ai";

import { ask } from "./chat_in_node.mjs";

const base = process.env.PROTOCOLS_URL;
if (!base) throw new Error("set PROTOCOLS_URL to the protocol demo's address");
const api = (wire) => `${base}/api/${wire}`;
const question = "count to 3";
const answer = "1, 2, 3.";
const asked = { role: "user", text: question };

// A chat that went through without a word of complaint.
function assertQuiet(result) {
  assert.equal(result.status, "ready");
  assert.equal(result.error, null);
  assert.deepEqual(result.onError, []);
  assert.deepEqual(result.onFinish, { isError: false, isAbort: false, isDisconnect: false });
}

test("DefaultChatTransport and the UI message stream: the answer shows", async () => {
  const result = await ask({ api: api("ui-message-stream"), question });
  assertQuiet(result);
  assert.deepEqual(result.shown, [asked, { role: "assistant", text: answer }]);
});

test("DefaultChatTransport and the old data stream protocol: 200, no error, nothing shows", async () => {
  // The server did send the answer, in AI SDK 4's format...
  const raw = await fetch(api("data-stream"), {
    method: "POST",
    headers: { "content-type": "application/json", connection: "close" },
    body: JSON.stringify({
      id: randomUUID(),
      messages: [{ id: "u1", role: "user", parts: [{ type: "text", text: question }] }],
    }),
  });
  assert.equal(raw.status, 200);
  assert.equal(raw.headers.get("x-vercel-ai-data-stream"), "v1");
  assert.match(await raw.text(), /^0:"1,"$/m);

  // ...and the chat shows the question alone, as if the model had said nothing.
  const result = await ask({ api: api("data-stream"), question });
  assert.deepEqual(result.http, [{ status: 200, contentType: "text/plain; charset=utf-8" }]);
  assertQuiet(result);
  assert.deepEqual(result.shown, [asked]);

  // One level down: the transport's stream has no chunk, so readUIMessageStream builds no message.
  const transport = new DefaultChatTransport({ api: api("data-stream"), headers: { connection: "close" } });
  const stream = await transport.sendMessages({
    chatId: randomUUID(),
    messages: [{ id: "u1", role: "user", parts: [{ type: "text", text: question }] }],
    trigger: "submit-message",
    messageId: undefined,
    abortSignal: undefined,
  });
  const messages = [];
  for await (const message of readUIMessageStream({ stream })) messages.push(message);
  assert.deepEqual(messages, []);
});

test("a plain text body: TextStreamChatTransport shows it, DefaultChatTransport shows nothing", async () => {
  const text = await ask({ api: api("text-stream"), transport: "text", question });
  assertQuiet(text);
  assert.deepEqual(text.shown, [asked, { role: "assistant", text: answer }]);

  const wrong = await ask({ api: api("text-stream"), question });
  assertQuiet(wrong);
  assert.deepEqual(wrong.shown, [asked]);
});

test("TextStreamChatTransport on the UI message stream shows the raw SSE lines", async () => {
  const result = await ask({ api: api("ui-message-stream"), transport: "text", question });
  assertQuiet(result);
  const [, shown] = result.shown;
  assert.ok(shown.text.startsWith('data: {"type":"start","messageId":"msg_1"}\n\n'), shown.text);
  assert.ok(shown.text.endsWith("data: [DONE]\n\n"), shown.text);
});

test("SSE events of your own (lesson 10's): DefaultChatTransport reports a validation error", async () => {
  const result = await ask({ api: api("token-events"), question });
  assert.equal(result.status, "error");
  assert.equal(result.error, 'Type validation failed: Value: {"text":"1,"}.');
  assert.deepEqual(result.onError, [result.error]);
  assert.equal(result.onFinish.isError, true);
  assert.deepEqual(result.shown, [asked]);
});
