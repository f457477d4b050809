// Embeds documents and a query through an embedpool node with LangChain JS's
// OpenAIEmbeddings (@langchain/openai, pinned by package-lock.json) at its
// default settings — batches of 512 texts, newlines stripped, the OpenAI
// client's base64 encoding, its retries — with only the base URL, a dummy key
// and the model name set. Compares every vector with the reference computed
// over the actor path.
//
//   node check.mjs BASE_URL MODEL EXPECTED_JSON
//
// BASE_URL is http://127.0.0.1:PORT/v1; EXPECTED_JSON holds
// {"texts": [...], "embeddings": [[...], ...]}. Prints "langchain-check: ok"
// and exits 0 when everything matches, else prints what differed and exits 1.
import { OpenAIEmbeddings } from "@langchain/openai";
import { readFileSync } from "node:fs";

const [baseURL, model, expectedFile] = process.argv.slice(2);
if (!baseURL || !model || !expectedFile) {
  console.error("usage: node check.mjs BASE_URL MODEL EXPECTED_JSON");
  process.exit(2);
}
const expected = JSON.parse(readFileSync(expectedFile, "utf8"));

function fail(message) {
  console.error("langchain-check: " + message);
  process.exit(1);
}

function compare(what, got, want) {
  if (got.length !== want.length)
    fail(`${what}: ${got.length} dimensions, expected ${want.length}`);
  for (let i = 0; i < want.length; ++i)
    if (Math.fround(got[i]) !== Math.fround(want[i]))
      fail(`${what}[${i}] = ${got[i]}, expected ${want[i]}`);
}

const embeddings = new OpenAIEmbeddings({
  model,
  apiKey: "unused",
  configuration: { baseURL },
});

const docs = await embeddings.embedDocuments(expected.texts);
if (docs.length !== expected.texts.length)
  fail(`embedDocuments: ${docs.length} vectors for ${expected.texts.length} texts`);
docs.forEach((row, i) => compare(`embedDocuments[${i}]`, row, expected.embeddings[i]));

const query = await embeddings.embedQuery(expected.texts[0]);
compare("embedQuery", query, expected.embeddings[0]);

console.log(`langchain-check: ok (${docs.length} documents, 1 query)`);
