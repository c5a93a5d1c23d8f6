// Calls /chat exactly as the website widget in the original thread does:
//   client.predict("/chat", {message: {text, files: []}, conversation_id})
// and also streams through client.submit(). Prints one JSON object for the test to check.
import { Client } from "@gradio/client";

const [url, conversationId] = process.argv.slice(2);
const client = await Client.connect(url);

const first = await client.predict("/chat", {
  message: { text: "Hello from the widget", files: [] },
  conversation_id: conversationId,
});

const chunks = [];
const job = client.submit("/chat", {
  message: { text: "Stream this reply please", files: [] },
  conversation_id: conversationId,
  source: "widget",
});
for await (const msg of job) {
  if (msg.type === "data") chunks.push(msg.data[0]);
}

let rejected = null;
try {
  await client.predict("/chat", {
    message: { text: "bad id", files: [] },
    conversation_id: "../../etc/passwd",
  });
} catch (err) {
  rejected = String(err && err.message ? err.message : err);
}

console.log(JSON.stringify({ first: first.data[0], chunks, rejected }));
process.exit(0);
