// Runs the verifier benchmark (bench/verify, built for wasm32-wasip1) in
// V8 through Node's WASI:  node bench/verify.mjs <verify-bench.wasm> <token dir>
import * as fs from 'node:fs';
import { WASI } from 'node:wasi';

const [wasmPath, dir] = process.argv.slice(2);
const wasi = new WASI({ version: 'preview1', args: ['verify-bench', '/data'], preopens: { '/data': dir } });
const module = await WebAssembly.compile(fs.readFileSync(wasmPath));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
wasi.start(instance);
