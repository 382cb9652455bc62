// An independent verifier written from docs/signed-messages.md alone, in Node.js with only its
// built-in modules (crypto, readline). Usage: node independent_verifier.mjs 'JWK' < lines
// prints "ok" or "bad: why" per line.
import { createPublicKey, createHash, verify } from "node:crypto";
import { createInterface } from "node:readline";

const MEMBERS = ["body", "boot", "dev", "kid", "seq", "sig", "topic", "ts", "typ", "v"];

// Strict JSON (section 2): integers only, no duplicate keys. JSON.parse would accept 1.0 and
// keep the last of duplicate keys silently, so the text is checked by this small parser.
function parseStrict(text) {
  let i = 0;
  const ws = () => { while (" \t\n\r".includes(text[i]) && i < text.length) i++; };
  const fail = (why) => { throw new Error(`${why} at ${i}`); };
  function value() {
    ws();
    const c = text[i];
    if (c === "{") {
      i++; const obj = {}; const seen = new Set(); ws();
      if (text[i] === "}") { i++; return obj; }
      for (;;) {
        ws(); if (text[i] !== '"') fail("key expected");
        const k = string();
        if (seen.has(k)) fail(`duplicate key ${k}`);
        seen.add(k); ws();
        if (text[i++] !== ":") fail("colon expected");
        Object.defineProperty(obj, k, { value: value(), enumerable: true, writable: true, configurable: true });
        ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === "}") { i++; return obj; }
        fail("comma or } expected");
      }
    }
    if (c === "[") {
      i++; const arr = []; ws();
      if (text[i] === "]") { i++; return arr; }
      for (;;) {
        arr.push(value()); ws();
        if (text[i] === ",") { i++; continue; }
        if (text[i] === "]") { i++; return arr; }
        fail("comma or ] expected");
      }
    }
    if (c === '"') return string();
    for (const [lit, v] of [["true", true], ["false", false], ["null", null]]) {
      if (text.startsWith(lit, i)) { i += lit.length; return v; }
    }
    const m = /^-?(0|[1-9][0-9]*)/.exec(text.slice(i));
    if (!m) fail("value expected");
    i += m[0].length;
    if (".eE".includes(text[i]) && i < text.length) fail("non-integer number");
    const n = Number(m[0]);
    if (!Number.isSafeInteger(n)) fail("integer out of range");
    return n;
  }
  function string() {
    const start = i++;
    while (text[i] !== '"') {
      if (i >= text.length) fail("unterminated string");
      if (text[i] === "\\") i++;
      i++;
    }
    i++;
    const s = JSON.parse(text.slice(start, i));
    if (!s.isWellFormed()) fail("lone surrogate");
    return s;
  }
  const v = value(); ws();
  if (i !== text.length) fail("trailing text");
  return v;
}

// Section 4: JSON.stringify gives JCS for these values once object keys are sorted by UTF-16.
function jcs(v) {
  if (Array.isArray(v)) return "[" + v.map(jcs).join(",") + "]";
  if (v !== null && typeof v === "object") {
    return "{" + Object.keys(v).sort().map((k) => JSON.stringify(k) + ":" + jcs(v[k])).join(",") + "}";
  }
  return JSON.stringify(v);
}

function b64url(text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) throw new Error("bad base64url");
  const buf = Buffer.from(text, "base64url");
  if (buf.toString("base64url") !== text) throw new Error("non-canonical base64url");
  return buf;
}

function check(line, jwk, key) {
  let env = parseStrict(line);
  let arrival = null;
  if (env && typeof env === "object" && "payload" in env) {
    arrival = env.topic;
    env = typeof env.payload === "string" ? parseStrict(env.payload) : env.payload;
  }
  if (!env || typeof env !== "object" || Array.isArray(env)) throw new Error("not an object");
  if (Object.keys(env).sort().join() !== MEMBERS.join()) throw new Error("not the ten members");
  const thumb = createHash("sha256").update(`{"crv":"Ed25519","kty":"OKP","x":"${jwk.x}"}`).digest("base64url");
  if (env.v !== 1 || env.kid !== thumb) throw new Error("wrong version or kid");
  const sig = b64url(env.sig);
  if (sig.length !== 64) throw new Error("signature is not 64 bytes");
  const unsigned = { ...env };
  delete unsigned.sig;
  if (!verify(null, Buffer.from(jcs(unsigned), "utf8"), key, sig)) throw new Error("signature");
  if (arrival !== null && arrival !== env.topic) throw new Error("topic");
}

const jwk = JSON.parse(process.argv[2]);
const key = createPublicKey({ key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x }, format: "jwk" });
const out = [];
for await (const line of createInterface({ input: process.stdin, crlfDelay: Infinity })) {
  if (!line.trim()) continue;
  try { check(line, jwk, key); out.push("ok"); } catch (e) { out.push(`bad: ${e.message}`); }
}
process.stdout.write(out.join("\n") + "\n");
