/** Escaping for XML written as text (domain, backup, checkpoint and disk XML built by hand). */

/** Escape `s` for element text or an attribute value in either quote style. */
export function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;');
}
