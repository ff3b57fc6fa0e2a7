"""Markup and boilerplate stripping with the standard library's HTML parser.

Scraped support tickets and web text carry tags, entities and e-mail footers that teach a model
nothing. The parser only runs when the text contains something that looks like a tag, so prose
such as ``a < b and c > d`` or code in a completion is left alone; indentation is kept because
completions may be code.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_HTML_TAGS = (
    "a|abbr|address|article|aside|b|blockquote|body|br|button|caption|center|code|dd|del|div|dl|dt|em|font|"
    "footer|form|h[1-6]|head|header|hr|html|i|iframe|img|input|label|li|link|main|meta|nav|noscript|ol|p|pre|"
    "s|script|section|small|span|strike|strong|style|sub|sup|table|tbody|td|template|tfoot|th|thead|title|tr|"
    "u|ul"
)
# Known HTML element names only, so that generics such as List<String> in code are not taken for tags.
# A lone opening tag is usually prose about HTML ("tags like <b> show up"); real markup closes its
# elements, uses void elements, or carries comments or a doctype.
_REAL_MARKUP = re.compile(
    rf"(?i)</(?:{_HTML_TAGS})\s*>|<(?:br|hr|img|meta|link|input)\b[^<>]*>|<!--.*?-->|<!doctype", re.S
)
_ENTITY = re.compile(r"&(?:[A-Za-z]{2,8}|#\d{1,6}|#x[0-9A-Fa-f]{1,6});")
_BLOCK_TAGS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "br",
        "dd",
        "div",
        "dl",
        "dt",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "li",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "ul",
    ]
)
_SKIP_TAGS = frozenset({"script", "style", "head", "title", "noscript", "template"})
_BOILERPLATE = re.compile(
    r"(?im)^[ \t]*(?:"
    r"sent from my (?:iphone|ipad|android|galaxy|mobile device|phone)[^\n]*"
    r"|get outlook for (?:ios|android)[^\n]*"
    r"|click here to unsubscribe[^\n]*|to unsubscribe[^\n]*|unsubscribe from (?:this|these|our) [^\n]*"
    r"|this (?:e-?mail|message) (?:and any attachments )?(?:is|may be) confidential[^\n]*"
    r"|(?:copyright )?(?:©|\(c\)|copyright) ?\d{4}[^\n]*all rights reserved\.?[^\n]*"
    r"|all rights reserved\.?"
    r"|this site uses cookies[^\n]*|we use cookies[^\n]*|accept (?:all )?cookies"
    r"|view (?:this e-?mail )?in (?:your )?browser[^\n]*"
    r")[ \t]*$"
)


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self.skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.parts.append(data)


def html_to_text(text: str) -> str:
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    joined = "".join(parser.parts)
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in joined.splitlines()]
    return "\n".join(lines)


def tidy_whitespace(text: str) -> str:
    """Trailing spaces go, runs of blank lines become one; leading indentation stays."""
    text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def strip_markup(text: str) -> str:
    """Text without tags, entities and boilerplate lines.

    Text with none of them comes back exactly as it was: whitespace is tidied only where markup was
    removed, and the original's leading and trailing whitespace is kept (a prompt ending in
    "### Response:\n" must end there after cleaning too, or training and inference tokenise the
    boundary differently).
    """
    cleaned = text
    if _REAL_MARKUP.search(cleaned):
        cleaned = html_to_text(cleaned)
    elif _ENTITY.search(cleaned):
        cleaned = html.unescape(cleaned)
    cleaned = _BOILERPLATE.sub("", cleaned)
    if cleaned == text:
        return text
    body = tidy_whitespace(cleaned)
    if not body:
        return body
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()) :]
    return lead + body + trail
