// npm pack hooks of the engine package: `prepack` copies the files the engine loads (vendor.json: the
// onnxruntime-web, tokenizers and jinja files, from this folder's node_modules, the versions of
// package-lock.json) into vendor/<segment>/ -- the URL layout worker.js imports (../vendor/...) -- so the
// packed engine is self-contained and fetches nothing from a CDN; `postpack` (--clean) removes vendor/ and
// the generated types/ again, so a checkout keeps serving node_modules directly. setup.py does the same for
// the Python wheel.
import { cpSync, mkdirSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const web = join(dirname(fileURLToPath(import.meta.url)), '..');
const vendor = join(web, 'vendor');

if (process.argv.includes('--clean')) {
  rmSync(vendor, { recursive: true, force: true });
  rmSync(join(web, 'types'), { recursive: true, force: true });
} else {
  const table = JSON.parse(readFileSync(join(web, 'vendor.json'), 'utf8'));
  for (const [segment, entry] of Object.entries(table)) {
    if (segment.startsWith('_')) continue;
    const dist = join(web, 'node_modules', entry.package, entry.dist);
    mkdirSync(join(vendor, segment), { recursive: true });
    for (const file of entry.files) {
      if (!existsSync(join(dist, file))) throw new Error(`${join(dist, file)} is missing: run \`npm ci\` in ${web}`);
      cpSync(join(dist, file), join(vendor, segment, file));
    }
    const license = ['LICENSE', 'LICENSE.md'].map((n) => join(web, 'node_modules', entry.package, n)).find(existsSync);
    if (license) cpSync(license, join(vendor, segment, 'LICENSE'));
  }
}
