"""Post content: sanitizing remote HTML, building HTML from local plain text, and back.

Everything here is a pure function of its arguments (no network, no database):

- `sanitize_html` reduces remote HTML to the set Mastodon allows (DESIGN.md), using
  ammonia (through nh3) for the parsing and filtering, because an HTML5-conformant
  parser is what stops the mutation tricks a hand-written filter would miss;
- `plain_text_to_html` turns what a local account typed into the HTML Mastodon itself
  would send: paragraphs, links, `@user@domain` mentions and `#hashtags`;
- `extract_mentions` and `extract_hashtags` return what `plain_text_to_html` links, from
  the very same tokenizer, so the `tag` array of a Note always matches its content;
- `html_to_text` renders stored HTML as plain text for the CLI.
"""

from __future__ import annotations

import html as html_escaping
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from html.parser import HTMLParser
from typing import NamedTuple

import nh3

# ---------------------------------------------------------------------------
# Sanitizing remote HTML
# ---------------------------------------------------------------------------

#: The tags DESIGN.md allows in stored content (Mastodon's set).
ALLOWED_TAGS = frozenset({
    "p", "br", "span", "a", "del", "pre", "code", "em",
    "strong", "b", "i", "u", "ul", "ol", "li", "blockquote",
})  # fmt: skip

#: Links keep only these schemes; anything else (javascript:, data:, relative) loses its href.
LINK_SCHEMES = frozenset({"http", "https", "mailto"})

LINK_REL = "nofollow noopener noreferrer"

#: The longest HTML `sanitize_html` returns by default (characters).
MAX_HTML_LENGTH = 100_000

#: Appended when content had to be cut to `max_length`, so readers see it was cut.
TRUNCATION_MARK = "<p>…</p>"

# Tags whose content is dropped along with the tag: code, styling and embedded
# documents are never text a reader wrote (the list the Sanitize gem, and so
# Mastodon, uses, plus <template> and <textarea>).
_DROPPED_WITH_CONTENT = frozenset({
    "script", "style", "template", "textarea", "iframe", "noembed",
    "noframes", "noscript", "plaintext", "xmp", "svg", "math",
})  # fmt: skip

# Block containers outside the allowed set: each becomes a space, so that the words
# on either side do not run together once the tag is gone.
_SPACED_BLOCKS = (
    "div", "section", "article", "aside", "header", "footer", "main", "nav", "address",
    "hgroup", "figure", "figcaption", "details", "summary", "dl", "dt", "dd", "hr",
    "table", "caption", "tr", "td", "th",
)  # fmt: skip

# Tags outside the allowed set that are rendered rather than flattened, as Mastodon
# does: headings become a bold paragraph and <s> a <del>. Every other unknown tag is
# unwrapped, keeping its text.
_REWRITTEN_TAGS: dict[str, tuple[str, str]] = {
    **{f"h{level}": ("<p><strong>", "</strong></p>") for level in range(1, 7)},
    "s": ("<del>", "</del>"),
    "strike": ("<del>", "</del>"),
    **{block: (" ", " ") for block in _SPACED_BLOCKS},
}

# The cleaner lets the rewritten tags through without attributes, so in its output
# they appear exactly as `<h1>` or `</h1>` (text and attribute values have `<`
# escaped), which makes this plain pattern a safe way to find them.
_REWRITTEN_TAG = re.compile(r"<(/?)(" + "|".join(sorted(_REWRITTEN_TAGS, key=len, reverse=True)) + r")>")

_HTML_SPACE = re.compile(r"[ \t\n\f\r]+")

# Microformats prefixes and the semantic and link-shortening classes Mastodon keeps.
_ALLOWED_CLASS = re.compile(r"(?:h|p|u|dt|e)-[a-z0-9-]+|mention|hashtag|ellipsis|invisible")


def _keep_allowed_classes(tag: str, attribute: str, value: str) -> str | None:
    """nh3 attribute filter: drop class tokens outside Mastodon's rules (nh3's own
    `allowed_classes` needs every class spelled out, and microformats are prefixes)."""
    if attribute != "class":
        return value
    kept = dict.fromkeys(token for token in _HTML_SPACE.split(value) if _ALLOWED_CLASS.fullmatch(token))
    return " ".join(kept) or None


_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS | _REWRITTEN_TAGS.keys()),
    clean_content_tags=set(_DROPPED_WITH_CONTENT),
    # "*" replaces ammonia's default of title and lang on every tag.
    attributes={"*": set(), "a": {"href", "class"}, "span": {"class"}},
    attribute_filter=_keep_allowed_classes,
    strip_comments=True,
    link_rel=LINK_REL,
    set_tag_attribute_values={"a": {"target": "_blank"}},
    url_schemes=set(LINK_SCHEMES),
    # A relative link in remote content would resolve against our own host.
    url_relative="deny",
)


def _rewrite_tag(match: re.Match[str]) -> str:
    opening, closing = _REWRITTEN_TAGS[match[2]]
    return closing if match[1] else opening


# How many more times HTML is cleaned to reach a form that cleaning leaves alone.
_MAX_SETTLING_PASSES = 3


def _clean(html: str) -> str:
    """Clean until the result is a fixed point of cleaning (which is what makes
    sanitize_html idempotent) and free of the tags in _REWRITTEN_TAGS."""
    cleaned = _CLEANER.clean(html)
    if _REWRITTEN_TAG.search(cleaned) is not None:
        cleaned = _CLEANER.clean(_REWRITTEN_TAG.sub(_rewrite_tag, cleaned))
    # The parser builds some trees that parse differently once serialized: markup
    # nested inside a <select> or a table cell, a link inside a link once the cell
    # around it is unwrapped. Parsing again settles them, usually in one more pass.
    for _ in range(_MAX_SETTLING_PASSES):
        settled = _CLEANER.clean(cleaned)
        if settled == cleaned:
            return cleaned
        cleaned = settled
    # Markup that still has not settled was made to be hostile; keep only its text
    # (cleaned once more only to spell it canonically, `&nbsp;` for instance).
    return _CLEANER.clean(_text_paragraphs_html(html_to_text(cleaned)))


def sanitize_html(html: str, *, max_length: int = MAX_HTML_LENGTH) -> str:
    """Reduce remote HTML to Mastodon's allowed set, safe to store and to show.

    Kept: the tags in ALLOWED_TAGS; `href` (http, https, mailto only) and `class` on
    `a`, `class` on `span`, where only microformats classes (h-, p-, u-, dt-, e-) and
    mention, hashtag, ellipsis, invisible survive. Every link gets `target="_blank"`
    and `rel="nofollow noopener noreferrer"`, replacing whatever it had. Script, style,
    SVG, MathML and embedded frames go with their content; comments go; headings become
    `<p><strong>`; other unknown tags are unwrapped, keeping their text.

    The result is never longer than `max_length` characters: longer content is cut
    (only the first `max_length` characters of input are read at all), cleaned again so
    that every tag is closed, and ends with TRUNCATION_MARK. Because the limit applies
    to the output, `sanitize_html(sanitize_html(x)) == sanitize_html(x)` always holds.
    """
    if max_length < len(TRUNCATION_MARK):
        raise ValueError(f"max_length must leave room for {TRUNCATION_MARK!r}")
    cut = min(len(html), max_length)
    cleaned = _clean(html[:cut])
    if cut == len(html) and len(cleaned) <= max_length:
        return cleaned
    budget = max_length - len(TRUNCATION_MARK)
    while len(cleaned) > budget:
        # Escaping and closing tags make the output longer than the input it came
        # from; shrink the cut in proportion, which strictly decreases it.
        cut = cut * budget // len(cleaned)
        cleaned = _clean(html[:cut])
    return cleaned + TRUNCATION_MARK


# ---------------------------------------------------------------------------
# Tokenizing local plain text: links, mentions, hashtags
# ---------------------------------------------------------------------------

# A link starts at a word boundary (not inside `a@https://` or a hashtag) and runs to
# whitespace or a character that cannot appear unescaped in a URL; at least one host
# character must follow the scheme. The scheme is matched without re.IGNORECASE on
# the whole pattern, which would let `ſ` (long s) pass for `s`.
_URL_PATTERN = r"(?<![\w@#$])(?a:(?i:https?)://)(?=[\w\[])[^\s<>\"]+"

# Mastodon's rules (Account::MENTION_RE): not after `=`, `/` or a word character, so
# `bob@example.com` (an email address) is no mention; the domain ends on a word
# character, so trailing punctuation stays outside.
_MENTION_PATTERN = (
    r"(?<![=/\w])@(?P<username>[A-Za-z0-9_]+(?:[.-]+[A-Za-z0-9_]+)*)"
    r"(?:@(?P<domain>\w+(?:[.-]+\w+)*))?"
)

# Mastodon's rules (Tag::HASHTAG_RE): not after `=`, `/`, `)` or a word character (so
# not `C#` or a URL fragment), word characters with Mastodon's separators inside,
# and at least one letter (`#1` is not a hashtag).
_HASHTAG_SEPARATORS = "\u00b7\u30fb\u200c"
_HASHTAG_CHARACTER = rf"[\w{_HASHTAG_SEPARATORS}]"
_HASHTAG_PATTERN = rf"(?<![=/)\w])#(?P<tag>(?={_HASHTAG_CHARACTER}*[^\W\d_])\w(?:{_HASHTAG_CHARACTER}*\w)?)"

_TOKEN = re.compile(rf"(?P<url>{_URL_PATTERN})|(?P<mention>{_MENTION_PATTERN})|(?P<hashtag>{_HASHTAG_PATTERN})")

_URL_TRAILING_PUNCTUATION = ".,:;!?'*…"
_URL_CLOSING_BRACKETS = {")": "(", "]": "[", "}": "{"}


class _Token(NamedTuple):
    """One piece of plain text: kind is "text", "url", "mention" or "hashtag".

    `value` is the URL for a link, the normalized handle (`user@domain`) of a mention,
    or None when it has no domain and none was given, and the normalized hashtag.
    """

    kind: str
    raw: str
    value: str | None = None


def _trim_url(url: str) -> str:
    """Drop trailing punctuation that ends a sentence rather than the URL; keep a
    closing bracket that closes one inside it (Wikipedia's `Foo_(bar)`)."""
    while url:
        last = url[-1]
        opening = _URL_CLOSING_BRACKETS.get(last)
        if opening is not None:
            if url.count(opening) >= url.count(last):
                break
        elif last not in _URL_TRAILING_PUNCTUATION:
            break
        url = url[:-1]
    return url


def normalize_hashtag(name: str) -> str:
    """The form hashtags are compared, stored and linked in: without a leading `#`,
    NFKC-normalized (full-width letters become plain ones) and lower-cased."""
    return unicodedata.normalize("NFKC", name.removeprefix("#")).lower()


def _tokens(text: str, default_domain: str | None) -> Iterator[_Token]:
    position = 0
    for match in _TOKEN.finditer(text):
        if match.start() > position:
            yield _Token("text", text[position : match.start()])
        position = match.end()
        if match["url"] is not None:
            url = _trim_url(match["url"])
            yield _Token("url", url, url)
            if len(url) < len(match["url"]):
                yield _Token("text", match["url"][len(url) :])
        elif match["mention"] is not None:
            domain = match["domain"] or default_domain
            handle = f"{match['username']}@{domain}".lower() if domain else None
            yield _Token("mention", match["mention"], handle)
        else:
            yield _Token("hashtag", match["hashtag"], normalize_hashtag(match["tag"]))
    if position < len(text):
        yield _Token("text", text[position:])


def extract_mentions(text: str, *, default_domain: str | None = None) -> list[str]:
    """The handles `@user@domain` in `text`, as lower-cased `user@domain`, unique, in order.

    A bare `@user` counts as `user@default_domain` when a default domain is given (the
    author's own domain, as Mastodon reads it) and is skipped otherwise. Email
    addresses and `@` inside links are not mentions.
    """
    handles = (token.value for token in _tokens(text, default_domain) if token.kind == "mention")
    return list(dict.fromkeys(handle for handle in handles if handle is not None))


def extract_hashtags(text: str) -> list[str]:
    """The `#hashtags` in `text`, normalized (see normalize_hashtag), unique, in order.

    A `#` inside a word (`C#`) or a link (`https://example.com/#fragment`) is no hashtag.
    """
    return list(dict.fromkeys(token.value for token in _tokens(text, None) if token.kind == "hashtag"))


# ---------------------------------------------------------------------------
# Local plain text → HTML
# ---------------------------------------------------------------------------

# Mastodon shows a link without its scheme (and `www.`) and with at most 30 more
# characters; the rest stays in the text, hidden by the `invisible` class, so that
# copying the link text still copies the whole URL.
_LINK_DISPLAY_PREFIX = re.compile(r"(?a:(?i:https?://(?:www\.)?))")
LINK_DISPLAY_LENGTH = 30

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def _paragraphs(text: str) -> list[str]:
    """Plain text split into paragraphs at blank lines, without surrounding whitespace."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return [paragraph.strip() for paragraph in _PARAGRAPH_BREAK.split(text) if paragraph.strip()]


def _escape_text(text: str) -> str:
    return html_escaping.escape(text, quote=False)


def _escape_attribute(value: str) -> str:
    return html_escaping.escape(value, quote=True)


def _text_html(text: str) -> str:
    return _escape_text(text).replace("\n", "<br>")


def _text_paragraphs_html(text: str) -> str:
    """Plain text as escaped paragraphs, with no links."""
    return "".join(f"<p>{_text_html(paragraph)}</p>" for paragraph in _paragraphs(text))


def _link_html(url: str) -> str:
    prefix = _LINK_DISPLAY_PREFIX.match(url)
    prefix_length = prefix.end() if prefix else 0
    shown = url[prefix_length : prefix_length + LINK_DISPLAY_LENGTH]
    hidden = url[prefix_length + LINK_DISPLAY_LENGTH :]
    parts = [
        f'<a href="{_escape_attribute(url)}" target="_blank" rel="{LINK_REL}">',
        f'<span class="invisible">{_escape_text(url[:prefix_length])}</span>',
    ]
    if hidden:
        parts.append(f'<span class="ellipsis">{_escape_text(shown)}</span>')
        parts.append(f'<span class="invisible">{_escape_text(hidden)}</span>')
    else:
        parts.append(f"<span>{_escape_text(shown)}</span>")
    parts.append("</a>")
    return "".join(parts)


def _token_html(token: _Token, profile_urls: Mapping[str, str], tag_url: Callable[[str], str]) -> str:
    if token.kind == "url":
        return _link_html(token.raw)
    if token.kind == "mention":
        profile_url = profile_urls.get(token.value or "")
        if profile_url is None:
            return _escape_text(token.raw)
        username = token.raw[1:].split("@", 1)[0]
        return (
            f'<span class="h-card"><a href="{_escape_attribute(profile_url)}" class="u-url mention">'
            f"@<span>{_escape_text(username)}</span></a></span>"
        )
    if token.kind == "hashtag":
        assert token.value is not None
        return (
            f'<a href="{_escape_attribute(tag_url(token.value))}" class="mention hashtag" rel="tag">'
            f"#<span>{_escape_text(token.raw[1:])}</span></a>"
        )
    return _text_html(token.raw)


def plain_text_to_html(
    text: str,
    *,
    mention_links: Mapping[str, str],
    tag_url: Callable[[str], str],
    default_domain: str | None = None,
) -> str:
    """HTML for a local post written as plain text, shaped the way Mastodon sends it.

    Blank lines separate `<p>` paragraphs and single newlines become `<br>`. http(s)
    URLs become links showing the URL without its scheme, shortened to 30 characters.
    A mention becomes an h-card link when `mention_links` has a profile URL for its
    handle (keys as `extract_mentions` returns them with the same `default_domain`;
    case and a leading `@` do not matter), and stays plain text otherwise. A hashtag
    links to `tag_url(normalized name)`, which should quote the name for a URL path.
    Everything else is escaped. Blank text gives "".
    """
    # Callers may spell handles as they were resolved (`@Alice@Example.com`).
    profile_urls = {handle.lstrip("@").lower(): url for handle, url in mention_links.items()}
    return "".join(
        "<p>"
        + "".join(_token_html(token, profile_urls, tag_url) for token in _tokens(paragraph, default_domain))
        + "</p>"
        for paragraph in _paragraphs(text)
    )


# ---------------------------------------------------------------------------
# Stored HTML → plain text for terminals
# ---------------------------------------------------------------------------

# Control characters in remote text could drive the terminal (ANSI escapes), so they
# never reach it; tab and newline are ordinary whitespace.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

_BLOCK_TAGS = frozenset({"p", "blockquote", "pre", "ul", "ol", "li"})

# Stands for a <br> while whitespace is collapsed; it is a control character, and
# those were removed from the text, so it cannot clash with content.
_LINE_BREAK = "\x00"
_LINE_BREAK_WITH_SPACES = re.compile(" ?\x00 ?")


def _link_labels(href: str) -> set[str]:
    """Link texts that already tell the reader where a link goes."""
    prefix = _LINK_DISPLAY_PREFIX.match(href)
    return {href, href[prefix.end() :] if prefix else href, href.removeprefix("mailto:")}


class _Block:
    """A block element being rendered: the finished text of its child blocks, the
    inline text collected since the last one, and for lists the next item number."""

    def __init__(self, tag: str, preformatted: bool) -> None:
        self.tag = tag
        self.preformatted = preformatted
        self.children: list[str] = []
        self.inline: list[str] = []
        self.next_item_number = 1

    def flush_inline(self) -> None:
        text = "".join(self.inline)
        self.inline.clear()
        if self.preformatted:
            text = text.replace(_LINE_BREAK, "\n").strip("\n")
        else:
            text = _LINE_BREAK_WITH_SPACES.sub("\n", _HTML_SPACE.sub(" ", text)).strip()
        if text.strip():
            self.children.append(text)

    def render(self, item_marker: str | None) -> str:
        self.flush_inline()
        separator = "\n" if self.tag in {"ul", "ol"} else "\n\n"
        text = separator.join(self.children)
        if not text:
            return ""
        if self.tag == "blockquote":
            return "\n".join(f"> {line}" if line else ">" for line in text.split("\n"))
        if item_marker is not None:
            indent = " " * len(item_marker)
            first, *rest = text.split("\n")
            return "\n".join([item_marker + first, *(indent + line if line else line for line in rest)])
        return text


class _TextRenderer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks = [_Block("", preformatted=False)]
        # Open links: the block and position where their text starts, and the target
        # to print after it (None for mentions, hashtags and links without one).
        self.links: list[tuple[_Block, int, str | None]] = []

    @property
    def current(self) -> _Block:
        return self.blocks[-1]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.current.inline.append(_LINE_BREAK)
        elif tag in _BLOCK_TAGS:
            self.current.flush_inline()
            preformatted = tag == "pre" or self.current.preformatted
            self.blocks.append(_Block(tag, preformatted))
        elif tag == "a":
            attributes = dict(attrs)
            classes = _HTML_SPACE.split(attributes.get("class") or "")
            # Mentions and hashtags read as themselves; other links show their target.
            href = None if "mention" in classes or "hashtag" in classes else attributes.get("href")
            self.links.append((self.current, len(self.current.inline), href))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.current.inline.append(_LINE_BREAK)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self.links:
            block, start, href = self.links.pop()
            if href and block is self.current:
                label = "".join(block.inline[start:]).strip()
                if label not in _link_labels(href):
                    block.inline.append(f" <{href}>")
        elif tag in _BLOCK_TAGS and any(block.tag == tag for block in self.blocks[1:]):
            while True:
                block = self.blocks.pop()
                parent = self.current
                marker = None
                if block.tag == "li":
                    if parent.tag == "ol":
                        marker = f"{parent.next_item_number}. "
                        parent.next_item_number += 1
                    else:
                        marker = "- "
                rendered = block.render(marker)
                if rendered:
                    parent.flush_inline()
                    parent.children.append(rendered)
                if block.tag == tag:
                    break

    def handle_data(self, data: str) -> None:
        self.current.inline.append(_CONTROL_CHARACTERS.sub("", data))

    def text(self) -> str:
        self.close()
        while len(self.blocks) > 1:
            self.handle_endtag(self.current.tag)
        return self.blocks[0].render(None)


def html_to_text(html: str) -> str:
    """Plain text for a terminal from stored (sanitized) HTML.

    Paragraphs and other blocks are separated by a blank line, `<br>` is a newline,
    whitespace elsewhere collapses as a browser would (not inside `<pre>`), entities
    are unescaped, list items get `- ` or `1. `, quotes get `> `. Links print in full:
    the `invisible` parts of a shortened link are text like any other and no ellipsis
    is added, so the whole URL can be copied; a link whose text is not its URL is
    followed by ` <URL>`. Control characters are removed.
    """
    renderer = _TextRenderer()
    renderer.feed(html)
    return renderer.text()
