/**
 * The one fast-xml-parser configuration of the project. Every parser keeps values as the strings
 * written (no number/boolean conversion of text or attributes) and leaves entities alone: they are
 * decoded once, by `decodeXmlEntities` (domain-xml.ts), where a value is read. What differs per
 * caller (attributes kept or not, order preserved, trimming, array shapes) is passed explicitly.
 * Parse documents handed to us through `guardedParse` (parse-guard.ts).
 */
import { XMLParser, type X2jOptions } from 'fast-xml-parser';

/** The settings every parser shares. */
export const XML_PARSER_BASE: Readonly<X2jOptions> = {
  parseTagValue: false,
  parseAttributeValue: false,
  processEntities: false,
  htmlEntities: false,
};

/** A parser with the shared settings plus the caller's `options`. */
export function makeXmlParser(options: X2jOptions): XMLParser {
  return new XMLParser({ ...options, ...XML_PARSER_BASE });
}
