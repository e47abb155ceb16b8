/**
 * fast-xml-parser's validator accepts some texts its parser then throws on with its own messages
 * ("Comment is not closed.", "readTagExp returned undefined …"; found by fuzz/). Every parse of
 * a document we were handed goes through here, so such a text is rejected with the caller's usual
 * message (`Invalid domain XML: …`) instead of a parser-internal error.
 */
import { errorMessage } from '../util/error-message.js';

export function guardedParse<T>(parse: () => T, prefix: string): T {
  try {
    return parse();
  } catch (e) {
    throw new Error(`${prefix}: ${errorMessage(e)}`);
  }
}
