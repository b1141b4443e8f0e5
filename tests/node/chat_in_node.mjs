// What a chat UI built on the AI SDK shows for one question, found without a browser: the
// SDK's own chat (AbstractChat, the class `useChat` wraps in @ai-sdk/react) with a plain
// in-memory state in place of React's, and the transport of your choice:
//     node chat_in_node.mjs <api url> <default|text> <question>
// prints, as JSON: the HTTP status and content type the transport got, the chat's status
// and error, every onError call (first lines), whether onFinish reported an error, and the messages the
// page would render (role and text). Lesson 13 runs it; ai_sdk_protocols.test.mjs asserts
// on it.
import { pathToFileURL } from "node:url";

import { AbstractChat, DefaultChatTransport, TextStreamChatTransport } from "ai";

// ReactChatState (packages/react/src/chat.react.ts) without its change callbacks: the same
// copies of the message list on every change, so a snapshot is what a render would see.
class PlainChatState {
  status = "ready";
  error = undefined;
  messages = [];
  pushMessage = (message) => {
    this.messages = this.messages.concat(message);
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (index, message) => {
    this.messages = [
      ...this.messages.slice(0, index),
      this.snapshot(message),
      ...this.messages.slice(index + 1),
    ];
  };
  snapshot = (value) => structuredClone(value);
}

class NodeChat extends AbstractChat {
  constructor(init) {
    super({ ...init, state: new PlainChatState() });
  }
}

const TRANSPORTS = { default: DefaultChatTransport, text: TextStreamChatTransport };

// An error's first line: a validation error goes on to list every chunk type it tried.
const firstLine = (error) => (error === undefined ? null : error.message.split("\n")[0]);

const textOf = (message) =>
  message.parts.filter((part) => part.type === "text").map((part) => part.text).join("");

/** Ask one question in a new chat; what the page would show once the answer is over. */
export async function ask({ api, transport = "default", question }) {
  const Transport = TRANSPORTS[transport];
  if (!Transport) throw new Error(`transport must be one of ${Object.keys(TRANSPORTS)}`);
  const responses = [];
  const errors = [];
  let finish;
  const chat = new NodeChat({
    transport: new Transport({
      api,
      // One connection per request: see the note in ai_sdk_client.test.mjs.
      headers: { connection: "close" },
      fetch: async (url, init) => {
        const response = await fetch(url, init);
        responses.push({ status: response.status, contentType: response.headers.get("content-type") });
        return response;
      },
    }),
    onError: (error) => errors.push(firstLine(error)),
    onFinish: ({ isError, isAbort, isDisconnect }) => {
      finish = { isError, isAbort, isDisconnect };
    },
  });
  await chat.sendMessage({ text: question });
  return {
    http: responses,
    status: chat.status,
    error: firstLine(chat.error),
    onError: errors,
    onFinish: finish ?? null,
    shown: chat.messages.map((message) => ({ role: message.role, text: textOf(message) })),
  };
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const [api, transport, question] = process.argv.slice(2);
  if (!api || !transport || !question) {
    console.error("usage: node chat_in_node.mjs <api url> <default|text> <question>");
    process.exit(2);
  }
  console.log(JSON.stringify(await ask({ api, transport, question })));
}
