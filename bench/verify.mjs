// Runs the verifier benchmark (bench/verify, built for wasm32-wasip1) in
// V8 through Node's WASI:  node bench/verify.mjs <verify-bench.wasm> <token dir>
import * as fs from 'node:fs';
import { WASI } from 'node:wasi';

const [wasmPath, dir] = process.argv.slice(2);
const wasi = new WASI({ version: 'preview1', args: ['verify-bench', '/data'], preopens: { '/data': dir } });
const module = await WebAssembly.compile(fs.readFileSync(wasmPath));
// The bench times with Rust's `Instant`, which reads WASI's monotonic clock
// (id 1). Answer it with this process's CPU time (user + system, from
// `process.cpuUsage()`, µs): other work on the machine does not inflate it.
const imports = wasi.getImportObject();
const preview1 = imports.wasi_snapshot_preview1;
const clockTimeGet = preview1.clock_time_get;
let memory;
preview1.clock_time_get = (id, precision, out) => {
  if (id !== 1) return clockTimeGet(id, precision, out);
  const { user, system } = process.cpuUsage();
  new DataView(memory.buffer).setBigUint64(out, BigInt(user + system) * 1000n, true);
  return 0;
};
const instance = await WebAssembly.instantiate(module, imports);
memory = instance.exports.memory;
wasi.start(instance);
