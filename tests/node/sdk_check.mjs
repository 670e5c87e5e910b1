// The official openai Node SDK against a live ModelPort: embeddings (default base64 and float), legacy
// completions (stream and not), the Responses API (create, stream, the stream helper, retrieve, delete,
// previous_response_id, a function-call round trip). Prints one JSON object of what it saw, for
// tests/test_node_sdk.py to check: `node sdk_check.mjs BASE_URL TOKEN`.
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const weather = [{ type: "function", name: "get_weather", strict: false,
                   parameters: { type: "object", properties: { city: { type: "string" } } } }];
const seen = {};

const single = await client.embeddings.create({ model: "fake-embed", input: "The food was delicious" });
const floats = await client.embeddings.create({ model: "fake-embed", input: ["a", "b c"], encoding_format: "float" });
seen.embedding = { length: single.data[0].embedding.length, tokens: single.usage.prompt_tokens,
                   batch: floats.data.map((row) => row.index), batchTokens: floats.usage.prompt_tokens,
                   first: single.data[0].embedding[0] };
seen.embeddingAgain = (await client.embeddings.create({ model: "fake-embed", input: "The food was delicious",
                                                        encoding_format: "float" })).data[0].embedding[0];

const completion = await client.completions.create({ model: "fake", prompt: "Say hello", max_tokens: 3 });
let streamed = "";
for await (const chunk of await client.completions.create({ model: "oc", prompt: "x", stream: true })) {
  streamed += chunk.choices.map((choice) => choice.text).join("");
}
seen.completion = { text: completion.choices[0].text, finish: completion.choices[0].finish_reason,
                    tokens: completion.usage.completion_tokens, streamed };

const created = await client.responses.create({ model: "fake", input: "My name is Ada" });
const types = [];
for await (const event of await client.responses.create({ model: "fake", input: "hi", stream: true })) {
  types.push(event.type);
}
const helper = client.responses.stream({ model: "fake", input: "hi" });
let helperText = "";
helper.on("response.output_text.delta", (event) => { helperText += event.delta; });
const final = await helper.finalResponse();
const continued = await client.responses.create({ model: "oc-request", input: "What is my name?",
                                                  previous_response_id: created.id });
const retrieved = await client.responses.retrieve(created.id);
await client.responses.delete(created.id);
let deleted = "kept";
try { await client.responses.retrieve(created.id); } catch (error) { deleted = error.status; }
const call = await client.responses.create({ model: "oc-tools", input: "Weather?", tools: weather });
const answer = await client.responses.create({ model: "oc-request", previous_response_id: call.id, tools: weather,
  input: [{ type: "function_call_output", call_id: call.output[0].call_id, output: "sunny" }] });
seen.responses = { text: created.output_text, types, helperText, finalText: final.output_text,
                   continued: JSON.parse(continued.output_text).messages.length, retrieved: retrieved.id === created.id,
                   deleted, call: { type: call.output[0].type, name: call.output[0].name },
                   afterCall: JSON.parse(answer.output_text).messages.at(-1) };
console.log(JSON.stringify(seen));
