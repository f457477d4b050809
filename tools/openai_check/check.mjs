// Calls an embedpool node through the official OpenAI Node client, unchanged,
// with baseURL pointed at the node, and compares every embedding with the
// reference computed over the actor path.
//
//   node check.mjs BASE_URL MODEL EXPECTED_JSON
//
// BASE_URL is http://127.0.0.1:PORT/v1; EXPECTED_JSON holds
// {"texts": [...], "embeddings": [[...], ...]} (float32 values from the actor
// path). Prints "openai-check: ok" and exits 0 when everything matches, else
// prints what differed and exits 1.
import OpenAI from "openai";
import { readFileSync } from "node:fs";

const [baseURL, model, expectedFile] = process.argv.slice(2);
if (!baseURL || !model || !expectedFile) {
  console.error("usage: node check.mjs BASE_URL MODEL EXPECTED_JSON");
  process.exit(2);
}
const expected = JSON.parse(readFileSync(expectedFile, "utf8"));
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0, timeout: 20000 });

function fail(message) {
  console.error("openai-check: " + message);
  process.exit(1);
}

function compare(what, got, want) {
  if (got.length !== want.length)
    fail(`${what}: ${got.length} dimensions, expected ${want.length}`);
  for (let i = 0; i < want.length; ++i)
    if (Math.fround(got[i]) !== Math.fround(want[i]))
      fail(`${what}[${i}] = ${got[i]}, expected ${want[i]}`);
}

function checkResponse(what, res, texts) {
  if (res.object !== "list") fail(`${what}: object is ${res.object}`);
  if (res.model !== model) fail(`${what}: model is ${res.model}, expected ${model}`);
  if (res.data.length !== texts.length)
    fail(`${what}: ${res.data.length} embeddings for ${texts.length} inputs`);
  res.data.forEach((item, i) => {
    if (item.object !== "embedding") fail(`${what}: data[${i}].object is ${item.object}`);
    if (item.index !== i) fail(`${what}: data[${i}].index is ${item.index}`);
    const row = expected.texts.indexOf(texts[i]);
    compare(`${what} data[${i}]`, Array.from(item.embedding), expected.embeddings[row]);
  });
  if (!(res.usage.prompt_tokens > 0) || res.usage.total_tokens !== res.usage.prompt_tokens)
    fail(`${what}: usage ${JSON.stringify(res.usage)}`);
}

// The client's default: encoding_format "base64", decoded as little-endian float32.
checkResponse("single (base64)",
  await client.embeddings.create({ model, input: expected.texts[0] }), [expected.texts[0]]);
checkResponse("array (base64)",
  await client.embeddings.create({ model, input: expected.texts }), expected.texts);
checkResponse("array (float)",
  await client.embeddings.create({ model, input: expected.texts, encoding_format: "float" }),
  expected.texts);

// An unknown model is an APIError with status 404, code model_not_found,
// naming it.
try {
  await client.embeddings.create({ model: "no-such-model", input: "x" });
  fail("unknown model: no error");
} catch (err) {
  if (!(err instanceof OpenAI.APIError) || err.status !== 404)
    fail(`unknown model: expected APIError 404, got ${err}`);
  if (err.code !== "model_not_found")
    fail(`unknown model: code is ${err.code}, expected model_not_found`);
  if (!String(err.message).includes("no-such-model"))
    fail(`unknown model: message does not name it: ${err.message}`);
}

// GET /v1/models lists the model; GET /v1/models/{id} retrieves it.
const models = [];
for await (const m of client.models.list()) models.push(m.id);
if (!models.includes(model)) fail(`models.list: ${JSON.stringify(models)} lacks ${model}`);
const one = await client.models.retrieve(model);
if (one.id !== model || one.object !== "model")
  fail(`models.retrieve: ${JSON.stringify(one)}`);
console.log("openai-check: ok");
