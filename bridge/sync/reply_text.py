"""The lead's own words from a reply: plain text preferred, HTML stripped otherwise, and
the quoted thread cut where a mail client marks it reliably."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

# "On <date>, <name> <address> wrote:" as Gmail, Apple Mail and Outlook.com write it, in
# the languages we see most. Clients wrap it, so it may span up to three lines.
_ATTRIBUTION = re.compile(
    r"^[ \t]*(?:On|Am|Le|El|Il|Op)\b[^\n]*(?:\n[^\n]*){0,2}?"
    r"(?:\bwrote|\bschrieb|\ba écrit|\bescribió|\bha scritto|\bschreef)\b[^\n]*:[ \t]*$",
    re.MULTILINE,
)
# Outlook's separators: "-----Original Message-----", or a From:/Sent: header block.
_OUTLOOK = re.compile(
    r"^[ \t]*(?:-{2,}[ \t]*Original Message[ \t]*-{2,}|From:[^\n]*\n[ \t]*(?:Sent|Date):)",
    re.MULTILINE | re.IGNORECASE,
)
# Containers that hold the quoted thread in HTML mail.
_QUOTE_CLASSES = ("gmail_quote", "missive_quote", "yahoo_quoted", "moz-cite-prefix")
_QUOTE_IDS = ("divrplyfwdmsg", "appendonsend", "mail-editor-reference-message-container")
_BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"}
_SKIPPED = {"style", "script", "head", "title"}
_VOID = {"br", "img", "hr", "meta", "link", "input", "wbr", "col", "area", "base", "source"}


UNIBOX_HOST = "app.instantly.ai"
# What a reply that only quoted the thread says in GHL instead of its own words.
NO_OWN_TEXT = "(no text of its own: the reply only quoted the thread)"


def payload_text(payload: dict, name: str) -> str:
    """A payload scalar as trimmed text ('' for a missing value, a list or an object)."""
    value = payload.get(name)
    return "" if value is None or isinstance(value, dict | list) else str(value).strip()


def unibox_link(payload: dict) -> str | None:
    """The reply's Unibox link, when it is an http(s) link to Instantly's app: nothing else
    is put in GHL as a link to answer from."""
    url = payload_text(payload, "unibox_url")
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() in ("http", "https") and host == UNIBOX_HOST:
        return url
    return None


def reply_text(payload: dict) -> str:
    """The reply without its quoted thread: reply_text, else reply_html stripped, else
    the snippet. '' when the payload carries none."""
    for name, convert in (("reply_text", _as_is), ("reply_html", html_to_text)):
        value = payload.get(name)
        if isinstance(value, str) and value.strip():
            text = cut_quoted(convert(value))
            if text:
                return text
    snippet = payload.get("reply_text_snippet")
    return cut_quoted(snippet) if isinstance(snippet, str) else ""


def _as_is(text: str) -> str:
    return text


def cut_quoted(text: str) -> str:
    """Text before the first reliable quote marker, trailing '>' lines dropped, tidied."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    cuts = [m.start() for m in (_ATTRIBUTION.search(text), _OUTLOOK.search(text)) if m]
    if cuts:
        text = text[: min(cuts)]
    lines = text.split("\n")
    # A block of '>' lines at the end is the quoted thread; '>' lines between the lead's
    # own lines are an inline answer and stay.
    while lines and (not lines[-1].strip() or lines[-1].lstrip().startswith(">")):
        lines.pop()
    return _tidy("\n".join(lines))


def _tidy(text: str) -> str:
    lines = [line.rstrip() for line in text.split("\n")]
    text = "\n".join(lines).strip()
    return re.sub(r"\n{3,}", "\n\n", text)


def html_to_text(html: str) -> str:
    """Visible text of an HTML mail body, without quoted-thread containers."""
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    lines = "".join(parser.parts).split("\n")
    return _tidy("\n".join(line.strip() for line in lines))


class _TextParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._open: list[str] = []
        # The top of _open from the first element whose content is dropped (a quote).
        self._dropping: list[str] = []
        self._at_line_start = True

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            if tag == "br" and not self._dropping:
                self._emit("\n")
            return
        self._open.append(tag)
        attributes = {name: (value or "") for name, value in attrs}
        classes = attributes.get("class", "").lower()
        quoted = (
            tag in _SKIPPED
            or tag == "blockquote"
            or any(c in classes for c in _QUOTE_CLASSES)
            or attributes.get("id", "").lower() in _QUOTE_IDS
        )
        if self._dropping or quoted:
            self._dropping.append(tag)
        elif tag in _BLOCKS:
            self._end_line()

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID or tag not in self._open:
            return
        # Close everything opened after this tag too (browsers forgive unclosed tags).
        while self._open:
            closed = self._open.pop()
            if self._dropping:
                self._dropping.pop()
            elif closed in _BLOCKS:
                self._end_line()
            if closed == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self._dropping:
            # HTML collapses whitespace; line breaks come from the tags.
            self._emit(re.sub(r"\s+", " ", data))

    def _emit(self, text: str) -> None:
        self.parts.append(text)
        if text == "\n":
            self._at_line_start = True
        elif text.strip():
            self._at_line_start = False

    def _end_line(self) -> None:
        # A block starts or ends on a line of its own, but adjacent block edges make one
        # break, as a browser shows them; only <br> adds empty lines.
        if not self._at_line_start:
            self._emit("\n")
