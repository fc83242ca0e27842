// chaos_js: the core of the Rust `chaos` plugin, in JavaScript.
//
// It shows what a plugin of the `wasmvisor:plugin` world looks like in
// JavaScript (built with componentize-js), and the integration tests run
// the same behaviour checks on it as on the Rust guests. The messages are
// those of the Python example (plugins/python/app.py): "state", {"add": n},
// "crash", "stop", "version", {"send_after": {...}}, {"subscribe": T},
// {"publish": {...}}, "infos", {"spin": n} and {"alloc_mb": n}; casts
// "bump", {"add": n} and "crash"; init args as there (`subscribe`, `timer`,
// `fail_init`). `snapshot` and `restore` carry the args, the count and the
// infos across a hot reload.

import {
  publish,
  sendAfter,
  stop,
  subscribe,
} from "wasmvisor:plugin/runtime@0.4.0";

// The build script of the hot-reload tests' variant rewrites this line.
const VERSION = "1";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const encode = (value) => encoder.encode(JSON.stringify(value));
const decode = (bytes) => JSON.parse(decoder.decode(bytes));
const error = (code, message) => encode({ error: code, message });

// One instance serves one child, so module state is the child's state.
let args = null;
let count = 0;
let infos = [];
const hoard = [];

function spin(n) {
  let acc = 0n;
  for (let i = BigInt(n); i > 0n; i--) {
    acc = (acc + i * i) % 1000000007n;
  }
  return Number(acc);
}

export function init(bytes) {
  try {
    args = decode(bytes);
  } catch (e) {
    // A thrown value is init's `err`: the start fails with init-failed.
    throw `the args are not JSON: ${e}`;
  }
  if (args !== null && typeof args === "object") {
    if ("fail_init" in args) {
      throw args.fail_init;
    }
    for (const topic of args.subscribe ?? []) {
      subscribe(topic);
    }
    if (args.timer) {
      sendAfter(BigInt(args.timer.ms), encode(args.timer.msg));
    }
  }
  return { tag: "ready" };
}

export function handleContinue(_msg) {}

export function handleCall(msg, _replyTo) {
  let call;
  try {
    call = decode(msg);
  } catch (e) {
    return error("bad_message", String(e));
  }
  switch (call) {
    case "state":
      return encode({ args, count });
    case "crash":
      throw new Error("crash requested");
    case "stop":
      stop({ tag: "normal" });
      return encode("stopping");
    case "version":
      return encode(VERSION);
    case "infos":
      return encode(infos);
  }
  if (call !== null && typeof call === "object") {
    const [name] = Object.keys(call);
    const arg = call[name];
    switch (name) {
      case "add":
        count += arg;
        return encode(count);
      case "send_after":
        return encode(Number(sendAfter(BigInt(arg.ms), encode(arg.msg))));
      case "subscribe":
        subscribe(arg);
        return encode("ok");
      case "publish":
        publish(arg.topic, encode(arg.msg));
        return encode("ok");
      case "spin":
        return encode(spin(arg));
      case "alloc_mb": {
        const block = new Uint8Array(arg * 1024 * 1024);
        // Touch every page, so that the memory is really used.
        for (let i = 0; i < block.length; i += 4096) {
          block[i] = 1;
        }
        hoard.push(block);
        return encode(arg);
      }
    }
  }
  return error("bad_message", `unknown call ${JSON.stringify(call)}`);
}

export function handleCast(msg) {
  const cast = decode(msg);
  if (cast === "bump") {
    count += 1;
  } else if (cast === "crash") {
    throw new Error("crash requested");
  } else if (cast !== null && typeof cast === "object" && "add" in cast) {
    count += cast.add;
  }
}

export function handleInfo(info) {
  if (info.tag === "timer") {
    infos.push({ timer: decode(info.val) });
  } else if (info.tag === "event") {
    infos.push({ event: { topic: info.val.topic, msg: decode(info.val.msg) } });
  }
}

export function terminate(_reason) {}

export function snapshot() {
  return encode({ args, count, infos });
}

export function restore(state) {
  ({ args, count, infos } = decode(state));
}
