"""chaos_py: the core of the Rust `chaos` plugin, in Python.

It shows what a plugin of the `wasmvisor:plugin` world looks like in Python
(built with componentize-py), and the integration tests run the same
behaviour checks on it as on the Rust guests.

Messages are JSON. Args: any JSON, kept and returned by "state"; at `init`,
`{"subscribe": [T, ...]}` subscribes to those topics, `{"timer": {"ms": N,
"msg": M}}` sets a timer (so every start does both again) and `{"fail_init":
"why"}` refuses to start with that error.

| call                                   | effect and reply                               |
|----------------------------------------|------------------------------------------------|
| "state"                                | {"args": ARGS, "count": N}                     |
| {"add": n}                             | adds n to the count; the new count             |
| "crash"                                | raises, which traps (also as a cast)           |
| "stop"                                 | replies "stopping", then stops (normal)        |
| "version"                              | VERSION                                        |
| {"send_after": {"ms": N, "msg": M}}    | sets a timer; its id                           |
| {"subscribe": T}                       | subscribes to T; "ok"                          |
| {"publish": {"topic": T, "msg": M}}    | publishes M on T; "ok"                         |
| "infos"                                | the infos received so far, in order            |
| {"spin": n}                            | acc = (acc + i*i) % 1_000_000_007, i = n..1    |
| {"alloc_mb": n}                        | allocates and keeps n MiB; n                   |

Casts: "bump" adds 1, {"add": n} adds n, "crash" traps. Infos are recorded
as {"timer": M} and {"event": {"topic": T, "msg": M}}. `snapshot` and
`restore` carry the args, the count and the infos across a hot reload.
"""

import json
from typing import Optional

import wit_world
from componentize_py_types import Err
from wit_world.imports import runtime, types

# The build script of the hot-reload tests' variant rewrites this line.
VERSION = "1"


def encode(value) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def error(code: str, message: str) -> bytes:
    return encode({"error": code, "message": message})


def spin(n: int) -> int:
    acc = 0
    while n > 0:
        acc = (acc + n * n) % 1_000_000_007
        n -= 1
    return acc


class State:
    """What one child's instance holds between messages."""

    def __init__(self) -> None:
        self.args = None
        self.count = 0
        self.infos: list = []
        self.hoard: list = []


# Module state: componentize-py may make a new `WitWorld` object for each
# export it calls, so what lives between messages lives here. Each wasm
# instance has its own module, so this is one child's state.
S = State()


class WitWorld(wit_world.WitWorld):
    """The plugin's callbacks; one message at a time."""

    def init(self, args: bytes) -> types.InitOutcome:
        try:
            S.args = json.loads(args)
        except ValueError as e:
            raise Err(f"the args are not JSON: {e}")
        if isinstance(S.args, dict):
            if "fail_init" in S.args:
                raise Err(S.args["fail_init"])
            for topic in S.args.get("subscribe", []):
                runtime.subscribe(topic)
            timer = S.args.get("timer")
            if isinstance(timer, dict):
                runtime.send_after(timer["ms"], encode(timer["msg"]))
        return types.InitOutcome_Ready()

    def handle_continue(self, msg: bytes) -> None:
        pass

    def handle_call(self, msg: bytes, reply_to: int) -> Optional[bytes]:
        try:
            call = json.loads(msg)
        except ValueError as e:
            return error("bad_message", str(e))
        if call == "state":
            return encode({"args": S.args, "count": S.count})
        if call == "crash":
            raise RuntimeError("crash requested")
        if call == "stop":
            runtime.stop(types.ExitReason_Normal())
            return encode("stopping")
        if call == "version":
            return encode(VERSION)
        if call == "infos":
            return encode(S.infos)
        if isinstance(call, dict) and len(call) == 1:
            (name, arg), = call.items()
            if name == "add":
                S.count += arg
                return encode(S.count)
            if name == "send_after":
                return encode(runtime.send_after(arg["ms"], encode(arg["msg"])))
            if name == "subscribe":
                runtime.subscribe(arg)
                return encode("ok")
            if name == "publish":
                runtime.publish(arg["topic"], encode(arg["msg"]))
                return encode("ok")
            if name == "spin":
                return encode(spin(arg))
            if name == "alloc_mb":
                block = bytearray(arg * 1024 * 1024)
                # Touch every page, so that the memory is really used.
                for i in range(0, len(block), 4096):
                    block[i] = 1
                S.hoard.append(block)
                return encode(arg)
        return error("bad_message", f"unknown call {call!r}")

    def handle_cast(self, msg: bytes) -> None:
        cast = json.loads(msg)
        if cast == "bump":
            S.count += 1
        elif cast == "crash":
            raise RuntimeError("crash requested")
        elif isinstance(cast, dict) and "add" in cast:
            S.count += cast["add"]

    def handle_info(self, info: types.Info) -> None:
        if isinstance(info, types.Info_Timer):
            S.infos.append({"timer": json.loads(info.value)})
        elif isinstance(info, types.Info_Event):
            event = info.value
            S.infos.append(
                {"event": {"topic": event.topic, "msg": json.loads(event.msg)}}
            )

    def terminate(self, reason: types.ExitReason) -> None:
        pass

    def snapshot(self) -> Optional[bytes]:
        return encode({"args": S.args, "count": S.count, "infos": S.infos})

    def restore(self, state: bytes) -> None:
        saved = json.loads(state)
        S.args = saved["args"]
        S.count = saved["count"]
        S.infos = saved["infos"]
