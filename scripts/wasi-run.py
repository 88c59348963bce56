#!/usr/bin/env python3
"""Runs a wasm32-wasip1 program under wasmtime (the `wasmtime` package that setup.sh puts
in .venv): the cargo runner for the filter's unit tests compiled to the target the filter
ships for, so 32-bit `usize`, the pure-Rust crypto and the Wasm code paths are tested
where they run (scripts/test.sh).

    .venv/bin/python scripts/wasi-run.py program.wasm [args...]

Node's WASI was tried first: it ran the tests but crashed (SIGSEGV) on exit about one
run in three.
"""
import sys

from wasmtime import Engine, ExitTrap, Linker, Module, Store, WasiConfig


def main() -> int:
    program, args = sys.argv[1], sys.argv[2:]
    engine = Engine()
    module = Module.from_file(engine, program)
    linker = Linker(engine)
    linker.define_wasi()
    # The filter links the proxy-wasm ABI (`env.proxy_*`), which unit tests never call:
    # they run against the mock host. Each import is there so the module links, and
    # fails the test loudly if some code path reaches Envoy's ABI after all.
    for imp in module.imports:
        if imp.module == "env":

            def reached(*_args, name=imp.name):
                raise RuntimeError(f"{name}: a unit test reached the proxy-wasm host ABI")

            linker.define_func("env", imp.name, imp.type, reached)
    wasi = WasiConfig()
    wasi.argv = [program, *args]
    wasi.inherit_env()
    wasi.inherit_stdout()
    wasi.inherit_stderr()
    # Tests read fixtures by path: the tree is visible as it is.
    wasi.preopen_dir("/", "/")
    store = Store(engine)
    store.set_wasi(wasi)
    instance = linker.instantiate(store, module)
    try:
        instance.exports(store)["_start"](store)
    except ExitTrap as e:
        return e.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
