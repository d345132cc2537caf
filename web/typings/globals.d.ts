// Globals of the engine's dedicated worker that lib "dom" lacks (lib "webworker" cannot be combined with
// "dom", which client.js needs). Used only by `tsc -p web` (tsconfig.json); nothing here is emitted.
declare class FileReaderSync {
  readAsArrayBuffer(blob: Blob): ArrayBuffer;
}
