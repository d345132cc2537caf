// Stop conditions and streaming text. Pure: no onnxruntime, no DOM.
//
// IncrementalDecoder turns token ids into text deltas without splitting a UTF-8 character (byte
// fallback tokens decode to U+FFFD until the character is complete). StopStringMatcher holds back
// text that could be the start of a stop string, so a stop string never reaches the caller.

export class IncrementalDecoder {
  /** @param {(ids: number[]) => string} decode */
  constructor(decode) {
    this.decode = decode;
    /** @type {number[]} */
    this.ids = [];
    this.printed = 0; // characters of decode(ids) already returned
  }

  /** @param {number} id @returns {string} the new text, '' while a character is incomplete */
  push(id) {
    this.ids.push(id);
    const text = this.decode(this.ids);
    if (text.endsWith('\uFFFD')) return '';
    return this.take(text);
  }

  /** Whatever is left at the end (an incomplete character is returned as U+FFFD). */
  flush() {
    return this.take(this.decode(this.ids));
  }

  /** @param {string} text */
  take(text) {
    const delta = text.length > this.printed ? text.slice(this.printed) : '';
    this.printed = Math.max(this.printed, text.length);
    return delta;
  }
}

export class StopStringMatcher {
  /** @param {string[]} stops */
  constructor(stops) {
    this.stops = stops.filter((s) => s.length > 0);
    this.held = '';
    this.stopped = false;
  }

  /**
   * @param {string} delta new text
   * @returns {{emit: string, stopped: boolean}} text safe to show, and whether a stop string was found
   */
  push(delta) {
    if (this.stopped) return { emit: '', stopped: true };
    const buf = this.held + delta;
    const at = this.firstStop(buf);
    if (at >= 0) {
      this.stopped = true;
      this.held = '';
      return { emit: buf.slice(0, at), stopped: true };
    }
    const keep = this.partialSuffix(buf);
    this.held = buf.slice(buf.length - keep);
    return { emit: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** The held-back text once generation ends for another reason. */
  flush() {
    const rest = this.stopped ? '' : this.held;
    this.held = '';
    return rest;
  }

  /** @param {string} buf @returns {number} index of the earliest stop string, -1 if none */
  firstStop(buf) {
    let best = -1;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (best < 0 || i < best)) best = i;
    }
    return best;
  }

  /** @param {string} buf @returns {number} length of the longest suffix of buf that starts a stop string */
  partialSuffix(buf) {
    let keep = 0;
    for (const s of this.stops) {
      for (let n = Math.min(s.length - 1, buf.length); n > keep; n--) {
        if (buf.endsWith(s.slice(0, n))) { keep = n; break; }
      }
    }
    return keep;
  }
}
