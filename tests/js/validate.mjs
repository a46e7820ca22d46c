// Validates order-change events with ajv, the way a Node.js publisher would check them before
// publishing. Used by tests/unit/test_jsonschema_agreement.py, which compares these verdicts
// with the workers'.
//
//   node validate.mjs SCHEMA.json < events.jsonl > verdicts.jsonl
//
// SCHEMA.json is what `order-sync schema` prints. Each input line is one event as JSON text;
// each output line answers the input line of the same number: {"valid": true} or
// {"valid": false, "errors": [...ajv errors...]}. A line that is not JSON at all answers
// {"valid": false, "errors": [], "unparsable": true}.
//
// ajv runs with its defaults (strict mode on): the schema must compile as a publisher would
// compile it. Its one annotation keyword is declared, and the `date-time` format comes from
// ajv-formats. Anything strict mode only logs (strictTypes, ...) is an error here too.
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";

import Ajv from "ajv";
import addFormats from "ajv-formats";

const [schemaPath] = process.argv.slice(2);
if (!schemaPath) {
  console.error("usage: node validate.mjs SCHEMA.json < events.jsonl");
  process.exit(2);
}

const warnings = [];
const ajv = new Ajv({
  allErrors: true,
  logger: { log: console.error, warn: (...args) => warnings.push(args.join(" ")), error: console.error },
});
addFormats(ajv);
ajv.addKeyword("x-sellercloud-name");

const validate = ajv.compile(JSON.parse(readFileSync(schemaPath, "utf8")));
if (warnings.length > 0) {
  console.error(`ajv warned while compiling the schema:\n${warnings.join("\n")}`);
  process.exit(3);
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
const out = [];
for await (const line of lines) {
  let event;
  try {
    event = JSON.parse(line);
  } catch {
    out.push(JSON.stringify({ valid: false, errors: [], unparsable: true }));
    continue;
  }
  const valid = validate(event);
  out.push(JSON.stringify(valid ? { valid } : { valid, errors: validate.errors }));
  if (out.length >= 1000) {
    process.stdout.write(out.join("\n") + "\n");
    out.length = 0;
  }
}
if (out.length > 0) {
  process.stdout.write(out.join("\n") + "\n");
}
