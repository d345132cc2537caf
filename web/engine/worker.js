// Worker entry point: wires the libraries served under /vendor/ into the engine and answers RPC.
import { Tokenizer } from '../vendor/tokenizers/tokenizers.min.mjs';
import { Template } from '../vendor/jinja/index.js';
import { Engine } from './engine.js';
import { Handler } from './handler.js';
import { LogTap } from './session.js';
import { ModelStore } from './cache.js';

const logTap = new LogTap(console).install(); // before onnxruntime-web binds console (first session)
const loadOrt = (/** @type {string} */ p) => (p === 'webgpu' ? import('../vendor/ort/ort.webgpu.min.mjs') : import('../vendor/ort/ort.wasm.min.mjs'));
const engine = new Engine({ loadOrt, Tokenizer, Template, logTap, gpu: navigator.gpu, store: new ModelStore(),
  now: () => performance.now(), wasmPaths: new URL('../vendor/ort/', import.meta.url).href,
  hardwareConcurrency: navigator.hardwareConcurrency, crossOriginIsolated: self.crossOriginIsolated });
self.onmessage = new Handler(engine, self).onmessage;
