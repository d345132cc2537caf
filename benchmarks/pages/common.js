// Shared by the benchmark pages: timing, cache clearing, and what memory the page can observe.

export const now = () => performance.now();

/** Seconds taken by an async call. @param {() => Promise<any>} fn */
export async function seconds(fn) {
  const t0 = now();
  const out = await fn();
  return { s: (now() - t0) / 1000, out };
}

/** Delete every Cache API cache of this origin (webllama-models-v1, transformers-cache, ...) and our OPFS shards. */
export async function clearCaches() {
  if (typeof caches === 'undefined') return;
  for (const name of await caches.keys()) await caches.delete(name);
  const root = navigator.storage && navigator.storage.getDirectory ? await navigator.storage.getDirectory() : null;
  if (root) await root.removeEntry('webllama-models-v1', { recursive: true }).catch(() => undefined);
}

/**
 * What the page can observe about memory: performance.memory (main-thread JS heap, Chromium only) and
 * performance.measureUserAgentSpecificMemory() (every realm of the page, workers included; needs cross-origin
 * isolation; resolves at the next GC unless Chromium runs with --enable-blink-features=ForceEagerMeasureMemory).
 */
export async function pageMemory() {
  const out = { performance_memory: null, user_agent_specific_memory_bytes: null, user_agent_specific_memory_error: null };
  const pm = /** @type {any} */ (performance).memory;
  if (pm) out.performance_memory = { used_js_heap_size: pm.usedJSHeapSize, total_js_heap_size: pm.totalJSHeapSize, js_heap_size_limit: pm.jsHeapSizeLimit };
  const measure = /** @type {any} */ (performance).measureUserAgentSpecificMemory;
  if (!measure) out.user_agent_specific_memory_error = 'measureUserAgentSpecificMemory is not available';
  else if (!self.crossOriginIsolated) out.user_agent_specific_memory_error = 'the page is not cross-origin isolated';
  else {
    try {
      const r = await Promise.race([measure.call(performance), new Promise((_, rej) => setTimeout(() => rej(new Error('timed out after 5 s')), 5000))]);
      out.user_agent_specific_memory_bytes = r.bytes;
    } catch (e) {
      out.user_agent_specific_memory_error = String(e && e.message || e);
    }
  }
  return out;
}
