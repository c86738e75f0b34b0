// "Copy as curl" and "Copy as Python": the synchronous call equivalent to the form's request.
// The key is never written into a snippet: both read $TESSERA_API_KEY when the page has one.

import { baseUrl, getKey } from "./api.js";

const shellQuote = (s) => `'${String(s).replace(/'/g, `'\\''`)}'`;

// Python literals: a JSON string is a valid Python string literal; numbers are the same.
const pyValue = (v) => (typeof v === "string" ? JSON.stringify(v) : String(v));

export function curlSnippet(params) {
  const url = `${baseUrl()}/v1/images/generations`;
  const auth = getKey() ? ` \\\n  -H "Authorization: Bearer $TESSERA_API_KEY"` : "";
  return (
    `curl -sS ${shellQuote(url)} -H 'Content-Type: application/json'${auth} \\\n` +
    `  -d ${shellQuote(JSON.stringify(params))} \\\n` +
    `  | python3 -c 'import sys, json, base64; ` +
    `open("tessera.png", "wb").write(base64.b64decode(json.load(sys.stdin)["data"][0]["b64_json"]))'`
  );
}

export function pythonSnippet(params) {
  const { prompt, ...rest } = params;
  const args = [pyValue(prompt), ...Object.entries(rest).map(([k, v]) => `${k}=${pyValue(v)}`)];
  const keyNote = getKey() ? "  # api_key: $TESSERA_API_KEY" : "";
  return [
    "from tessera_client import Client",
    "",
    `with Client(${pyValue(baseUrl())}, timeout=300) as client:${keyNote}`,
    `    result = client.generate(${args.join(", ")})`,
    '    result.save("tessera.png")',
    '    print("seed", result.seed)',
  ].join("\n");
}

/** Copy ``text``; falls back to selecting the snippet's text area (no clipboard access). */
export async function copy(text, area) {
  try {
    await navigator.clipboard.writeText(text);
    return "Copied.";
  } catch {
    area.focus();
    area.select();
    return "Selected: press Ctrl+C (or ⌘C) to copy.";
  }
}
