// Tokenizer: @huggingface/tokenizers (passed in, never re-implemented) plus the bundle's BOS/EOS rules.

/** @typedef {import('./manifest.js').Manifest['tokenizer']} TokenizerInfo */

export class TextTokenizer {
  /**
   * @param {any} TokenizerClass @huggingface/tokenizers' Tokenizer
   * @param {object} tokenizerJson tokenizer.json @param {object} tokenizerConfig tokenizer_config.json
   * @param {TokenizerInfo} info manifest.tokenizer
   */
  constructor(TokenizerClass, tokenizerJson, tokenizerConfig, info) {
    this.tok = new TokenizerClass(tokenizerJson, tokenizerConfig);
    this.config = /** @type {Record<string, any>} */ (tokenizerConfig);
    this.bosId = info.bos_token_id ?? null;
    this.eosIds = info.eos_token_ids || [];
    this.addBos = !!info.add_bos_token;
  }

  /**
   * @param {string} text
   * @param {{add_special_tokens?: boolean}} [opts] false (default): the text's own tokens, as Python's
   *   `tokenizer.encode(text, add_special_tokens=False).ids`; true: the tokenizer's post-processor runs
   * @returns {number[]}
   */
  encode(text, opts = {}) {
    return Array.from(this.tok.encode(text, { add_special_tokens: !!opts.add_special_tokens }).ids, Number);
  }

  /** Prompt ids for a plain (non-chat) text: BOS first when manifest.tokenizer.add_bos_token. @param {string} text */
  encodePrompt(text) {
    const ids = this.encode(text);
    return this.addBos && this.bosId !== null ? [this.bosId, ...ids] : ids;
  }

  /** @param {number[]} ids @param {{skip_special_tokens?: boolean}} [opts] @returns {string} */
  decode(ids, opts = {}) {
    return this.tok.decode(ids, { skip_special_tokens: !!opts.skip_special_tokens });
  }

  /** The string form of a special token from tokenizer_config.json ('' if absent). @param {string} key */
  specialToken(key) {
    const v = this.config[key];
    if (typeof v === 'string') return v;
    return v && typeof v.content === 'string' ? v.content : '';
  }
}
