// Chat template rendering with @huggingface/jinja (passed in), from tokenizer_config.json's
// chat_template. Bundles without one (base models such as stories260K) use FALLBACK_TEMPLATE: the
// message contents, one per line, so "chat" continues the text.

export const FALLBACK_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% if not loop.last %}\n{% endif %}{% endfor %}";

export class ChatTemplate {
  /**
   * @param {any} TemplateClass @huggingface/jinja's Template
   * @param {string|Array<{name: string, template: string}>|null|undefined} source tokenizer_config.chat_template
   * @param {{bos_token: string, eos_token: string}} specials
   */
  constructor(TemplateClass, source, specials) {
    const text = pickTemplate(source);
    this.isFallback = text === null;
    this.template = new TemplateClass(text ?? FALLBACK_TEMPLATE);
    this.specials = specials;
  }

  /**
   * @param {{role: string, content: string}[]} messages
   * @param {{add_generation_prompt?: boolean}} [opts]
   * @returns {string}
   */
  render(messages, opts = {}) {
    return this.template.render({
      messages,
      add_generation_prompt: opts.add_generation_prompt ?? true,
      bos_token: this.specials.bos_token,
      eos_token: this.specials.eos_token,
    });
  }
}

/** @param {string|Array<{name: string, template: string}>|null|undefined} source @returns {string|null} */
function pickTemplate(source) {
  if (typeof source === 'string' && source.length > 0) return source;
  if (Array.isArray(source)) {
    const named = source.find((t) => t.name === 'default') || source[0];
    return named ? named.template : null;
  }
  return null;
}
