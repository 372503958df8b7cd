"""Tests for microfedi.content: sanitizing, plain text → HTML, extraction, HTML → text."""

from __future__ import annotations

import random
import re
from html.parser import HTMLParser

import pytest

from microfedi.content import (
    MAX_HTML_LENGTH,
    TRUNCATION_MARK,
    extract_hashtags,
    extract_mentions,
    html_to_text,
    normalize_hashtag,
    plain_text_to_html,
    sanitize_html,
)

# DESIGN.md's allowed set, spelled out here rather than imported, so that widening the
# module's set fails these tests.
ALLOWED_TAGS = {
    "p", "br", "span", "a", "del", "pre", "code", "em",
    "strong", "b", "i", "u", "ul", "ol", "li", "blockquote",
}  # fmt: skip
LINK_SCHEMES = {"http", "https", "mailto"}
LINK_ATTRIBUTES = 'target="_blank" rel="nofollow noopener noreferrer"'
ALLOWED_CLASS = re.compile(r"(?:h|p|u|dt|e)-[a-z0-9-]+|mention|hashtag|ellipsis|invisible")


class _MarkupInventory(HTMLParser):
    """Every tag and attribute in a piece of HTML, read by the standard library's
    parser (not the ammonia parser the sanitizer uses)."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.comments: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


def assert_only_allowed_markup(html: str) -> None:
    inventory = _MarkupInventory(html)
    assert not inventory.comments
    for tag, attributes in inventory.elements:
        assert tag in ALLOWED_TAGS, html
        if tag == "a":
            assert set(attributes) <= {"href", "class", "target", "rel"}, html
            assert attributes["target"] == "_blank"
            assert attributes["rel"] == "nofollow noopener noreferrer"
            if "href" in attributes:
                scheme = (attributes["href"] or "").split(":", 1)[0].strip().lower()
                assert scheme in LINK_SCHEMES, html
        elif tag == "span":
            assert set(attributes) <= {"class"}, html
        else:
            assert not attributes, html
        for token in (attributes.get("class") or "").split():
            assert ALLOWED_CLASS.fullmatch(token), html


HOSTILE_INPUTS = [
    "<script>alert(1)</script>after",
    "<SCRIPT SRC=https://evil.example/x.js></SCRIPT>after",
    "<script>alert(1)",
    "<style>body { display: none }</style>after",
    "<p onclick=\"alert(1)\">click</p>",
    "<img src=x onerror=alert(1)>after",
    '<a href="javascript:alert(1)">x</a>',
    '<a href="JaVaScRiPt:alert(1)">x</a>',
    '<a href=" javascript:alert(1)">x</a>',
    '<a href="java&#x09;script:alert(1)">x</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    '<a href="vbscript:msgbox(1)">x</a>',
    "<iframe src=\"https://evil.example/\">fallback</iframe>after",
    "<object data=x>o</object><embed src=x>e",
    "<svg><script>alert(1)</script></svg>after",
    '<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>after',
    "<svg onload=alert(1)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<math href=\"javascript:alert(1)\">m</math>after",
    "<<script>script>alert(1)<</script>/script>",
    "<!--><script>alert(1)</script>-->",
    "<!-- <script>alert(1)</script> -->after",
    "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\"></noscript>",
    "<p><b>bold<i>both</b>italic</i></p>",
    "<p><b>unclosed",
    "<a href=\"https://example.com\"<script>alert(1)</script>",
    "<form action=https://evil.example><input value=v><button>send</button></form>",
    "<base href=\"https://evil.example/\"><a href=\"/x\">x</a>",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">m",
    "<span style=\"position:fixed;top:0;left:0;width:100%;height:100%\">cover</span>",
    "<p class=\"mention evil\" id=\"x\" title=\"t\" lang=\"en\" data-x=\"1\">attrs</p>",
    "<span class=\"mention evil h-card\">x</span>",
    "<a href=\"https://example.com/\" class=\"u-url\u00a0evil\" onmouseover=\"alert(1)\">x</a>",
    "<template><script>alert(1)</script></template>after",
    "<textarea><script>alert(1)</script></textarea>after",
    "<xmp><script>alert(1)</script></xmp>after",
    "<table><tr><td><a href=\"javascript:alert(1)\">cell</a></td></tr></table>",
    "<h1 onclick=\"alert(1)\">Title</h1><p>body</p>",
    "<p>a<h2>b</h2>c</p>",
]


@pytest.mark.parametrize("html", HOSTILE_INPUTS)
def test_hostile_input_is_neutralized(html: str) -> None:
    cleaned = sanitize_html(html)
    assert_only_allowed_markup(cleaned)
    # Text may still read "alert(1)" (escaped, it is only text); no URL may run it.
    assert "javascript" not in cleaned.lower()
    assert sanitize_html(cleaned) == cleaned


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<script>alert(1)</script><p>text</p>", "<p>text</p>"),
        ("<style>p { color: red }</style><p>text</p>", "<p>text</p>"),
        ("<p>before<img src=x onerror=alert(1)>after</p>", "<p>beforeafter</p>"),
        ('<p onclick="alert(1)" style="color:red">text</p>', "<p>text</p>"),
        ('<a href="javascript:alert(1)">click</a>', f"<a {LINK_ATTRIBUTES}>click</a>"),
        ('<a href="data:text/html,x">click</a>', f"<a {LINK_ATTRIBUTES}>click</a>"),
        # Relative and scheme-relative links would point at our own host.
        ('<a href="/settings">click</a>', f"<a {LINK_ATTRIBUTES}>click</a>"),
        ('<a href="//evil.example/">click</a>', f"<a {LINK_ATTRIBUTES}>click</a>"),
        ('<iframe src="https://evil.example/">fallback</iframe><p>text</p>', "<p>text</p>"),
        ("<svg><text>drawn</text></svg><p>text</p>", "<p>text</p>"),
        ("<p><b>unclosed", "<p><b>unclosed</b></p>"),
        ("<p><b>bold<i>both</b>italic</i></p>", "<p><b>bold<i>both</i></b><i>italic</i></p>"),
        ("<!-- hidden --><p>text</p>", "<p>text</p>"),
        ('<span class="mention evil">@x</span>', '<span class="mention">@x</span>'),
        ('<span class="evil">x</span>', "<span>x</span>"),
        (
            '<span class="h-card u-url p-name dt-published e-content x-card">x</span>',
            '<span class="h-card u-url p-name dt-published e-content">x</span>',
        ),
        ('<span style="position:fixed">x</span>', "<span>x</span>"),
        (
            '<a href="https://x.example/" rel="me" target="_top">x</a>',
            f'<a href="https://x.example/" {LINK_ATTRIBUTES}>x</a>',
        ),
        ('<a href="mailto:al@x.example">mail</a>', f'<a href="mailto:al@x.example" {LINK_ATTRIBUTES}>mail</a>'),
        ("<custom-element>kept</custom-element> <font color=red>text</font>", "kept text"),
        # What Mastodon renders rather than flattens.
        ("<h1>Title</h1><p>body</p>", "<p><strong>Title</strong></p><p>body</p>"),
        ("<s>gone</s> <strike>too</strike>", "<del>gone</del> <del>too</del>"),
        ("<div>one</div><div>two</div>", " one  two "),
        ("<p>a &amp; b &lt; c</p>", "<p>a &amp; b &lt; c</p>"),
    ],
)
def test_sanitize_exact_output(html: str, expected: str) -> None:
    assert sanitize_html(html) == expected


# A post as Mastodon renders it, in the form we store: every link carries the forced
# target and rel. It must come through exactly as it is.
STORED_MASTODON_POST = (
    '<p><span class="h-card"><a href="https://mastodon.example/@bob" class="u-url mention" '
    f'{LINK_ATTRIBUTES}>@<span>bob</span></a></span> look at '
    f'<a href="https://www.example.com/a/very/long/path/that/goes/on" {LINK_ATTRIBUTES}>'
    '<span class="invisible">https://www.</span><span class="ellipsis">example.com/a/very/long/path/t</span>'
    '<span class="invisible">hat/goes/on</span></a> '
    f'<a href="https://mastodon.example/tags/fediverse" class="mention hashtag" {LINK_ATTRIBUTES}>'
    "#<span>Fediverse</span></a></p><p>second<br>line &amp; more</p>"
    "<blockquote><p>quoted <em>em</em> <strong>strong</strong> <code>code</code></p></blockquote>"
    "<ul><li>one</li><li>two</li></ul><ol><li>first</li></ol><pre><code>x  =  1\n</code></pre>"
    "<p><del>old</del> <u>u</u> <b>b</b> <i>i</i></p>"
)


def test_allowed_markup_round_trips_unchanged() -> None:
    assert sanitize_html(STORED_MASTODON_POST) == STORED_MASTODON_POST


def test_mastodon_wire_format_only_gains_forced_link_attributes() -> None:
    wire = (
        '<p><span class="h-card" translate="no"><a href="https://mastodon.example/@bob" class="u-url mention">'
        "@<span>bob</span></a></span> "
        '<a href="https://mastodon.example/tags/fediverse" class="mention hashtag" rel="tag">#<span>Fediverse</span></a> '
        '<a href="https://example.com/" target="_blank" rel="nofollow noopener" translate="no">'
        '<span class="invisible">https://</span><span class="">example.com/</span><span class="invisible"></span></a></p>'
    )
    assert sanitize_html(wire) == (
        '<p><span class="h-card"><a href="https://mastodon.example/@bob" class="u-url mention" '
        f'{LINK_ATTRIBUTES}>@<span>bob</span></a></span> '
        f'<a href="https://mastodon.example/tags/fediverse" class="mention hashtag" {LINK_ATTRIBUTES}>'
        "#<span>Fediverse</span></a> "
        '<a href="https://example.com/" target="_blank" rel="nofollow noopener noreferrer">'
        '<span class="invisible">https://</span><span>example.com/</span><span class="invisible"></span></a></p>'
    )


def _tag_soup(rng: random.Random) -> str:
    pieces = [
        "<p>", "</p>", "<b>", "</b>", "<i>", "</i>", "<a href=\"https://example.com/?a=1&b=2\">", "</a>",
        "<a href=\"javascript:alert(1)\">", "<span class=\"h-card evil\">", "</span>", "<ul>", "<li>", "</ul>",
        "<ol>", "</li>", "<blockquote>", "</blockquote>", "<pre>", "</pre>", "<code>", "<br>", "<h1>", "</h1>",
        "<h3>", "</h3>", "<div>", "</div>", "<table>", "<tr>", "<td>", "</table>", "<s>", "</s>", "<script>",
        "</script>", "<style>", "</style>", "<svg>", "</svg>", "<math>", "<img src=x onerror=alert(1)>",
        "<!--", "-->", "<", ">", "&", "&amp;", "&lt;", "\"", "'", "text", " ", "\n", "\u00a0", "é", "<em>",
        "<strong>", "</em>", "<del>", "<u>", "<noscript>", "<template>", "<textarea>", "<iframe>", "<select>",
        "<option>", "<frameset>", "<body onload=alert(1)>", "<hr>", "<dl><dt>", "<dd>", "<figure>",
    ]  # fmt: skip
    return "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 40)))


def test_random_tag_soup_is_cleaned_and_idempotent() -> None:
    rng = random.Random(4)
    for _ in range(3000):
        html = _tag_soup(rng)
        cleaned = sanitize_html(html)
        assert_only_allowed_markup(cleaned)
        assert sanitize_html(cleaned) == cleaned, html


def test_random_tag_soup_cut_short_is_idempotent() -> None:
    rng = random.Random(5)
    for _ in range(1000):
        html = _tag_soup(rng) + _tag_soup(rng)
        cleaned = sanitize_html(html, max_length=60)
        assert len(cleaned) <= 60
        assert_only_allowed_markup(cleaned)
        assert sanitize_html(cleaned, max_length=60) == cleaned, html


# Found by a search for markup that keeps changing each time it is parsed again: a
# link, a <select>, deep blocks and a second link that each pass moves one level up.
UNSETTLING_HTML = (
    "<p>before</p><a href=https://example.com/>link <blockquote><ul><ul><pre><select><li><pre><ul><pre><pre><ul>"
    "<pre><ul><li><ul><pre><ul><pre><pre><ul><pre><ul><li><blockquote><ul><a href=https://example.com/>inner"
)


def test_markup_that_never_settles_is_reduced_to_its_text() -> None:
    cleaned = sanitize_html(UNSETTLING_HTML)
    assert {tag for tag, _ in _MarkupInventory(cleaned).elements} == {"p", "br"}
    assert cleaned.startswith("<p>before</p><p>link &lt;https://example.com/&gt;</p>")
    assert "inner" in cleaned
    assert sanitize_html(cleaned) == cleaned


@pytest.mark.parametrize(
    "html",
    [
        "&" * 30_000,  # each becomes &amp;: five times longer once escaped
        "<b>" * 40_000 + "deep",  # every tag has to be closed again
        "<p>" + "word " * 30_000 + "</p>",
        "<a href=\"https://example.com/\">x</a>" * 3_000,
        "<script>" + "x" * 200_000 + "</script><p>after</p>",
    ],
    ids=["ampersands", "deep-nesting", "long-paragraph", "many-links", "huge-script"],
)
def test_very_long_input_is_cut_to_the_limit(html: str) -> None:
    cleaned = sanitize_html(html)
    assert len(cleaned) <= MAX_HTML_LENGTH
    assert_only_allowed_markup(cleaned)
    assert sanitize_html(cleaned) == cleaned


def test_limit_must_leave_room_for_the_truncation_mark() -> None:
    with pytest.raises(ValueError):
        sanitize_html("<p>text</p>", max_length=len(TRUNCATION_MARK) - 1)


def test_truncation_is_marked_and_respects_a_smaller_limit() -> None:
    html = "<p>" + "word " * 100 + "</p>"
    cleaned = sanitize_html(html, max_length=120)
    assert len(cleaned) <= 120
    assert cleaned.startswith("<p>word word")
    assert cleaned.endswith("</p>" + TRUNCATION_MARK)
    assert sanitize_html(cleaned, max_length=120) == cleaned
    assert sanitize_html(html) == "<p>" + "word " * 100 + "</p>"


# ---------------------------------------------------------------- plain text → HTML


def tag_url(tag: str) -> str:
    return f"https://home.example/tags/{tag}"


def to_html(text: str, mention_links: dict[str, str] | None = None, **options: str) -> str:
    return plain_text_to_html(text, mention_links=mention_links or {}, tag_url=tag_url, **options)


def short_link(url: str, prefix: str, shown: str, hidden: str = "") -> str:
    middle = f'<span class="ellipsis">{shown}</span>' if hidden else f"<span>{shown}</span>"
    rest = f'<span class="invisible">{hidden}</span>' if hidden else ""
    return f'<a href="{url}" {LINK_ATTRIBUTES}><span class="invisible">{prefix}</span>{middle}{rest}</a>'


def test_paragraphs_and_line_breaks() -> None:
    text = "  first line\r\nsecond line\n\n\n  \nnew paragraph\n"
    assert to_html(text) == "<p>first line<br>second line</p><p>new paragraph</p>"
    assert to_html(" \n\n ") == ""


def test_text_is_escaped() -> None:
    assert to_html('<script>alert("x")</script> & <b>') == (
        "<p>&lt;script&gt;alert(\"x\")&lt;/script&gt; &amp; &lt;b&gt;</p>"
    )


def test_short_link() -> None:
    assert to_html("see https://example.com/page") == (
        "<p>see " + short_link("https://example.com/page", "https://", "example.com/page") + "</p>"
    )


def test_long_link_is_shortened_mastodon_style() -> None:
    url = "https://www.example.com/a/very/long/path/that/goes/on?x=1&y=2"
    assert to_html(url) == (
        "<p>"
        + short_link(
            "https://www.example.com/a/very/long/path/that/goes/on?x=1&amp;y=2",
            "https://www.",
            "example.com/a/very/long/path/t",
            "hat/goes/on?x=1&amp;y=2",
        )
        + "</p>"
    )


@pytest.mark.parametrize(
    ("text", "url", "after"),
    [
        ("go to https://example.com/a.", "https://example.com/a", "."),
        ("really https://example.com/a?!", "https://example.com/a", "?!"),
        ("list https://example.com/a, then", "https://example.com/a", ", then"),
        ("(see https://example.com/a)", "https://example.com/a", ")"),
        ("(https://en.wikipedia.org/wiki/Foo_(bar))", "https://en.wikipedia.org/wiki/Foo_(bar)", ")"),
        ("'https://example.com/a'", "https://example.com/a", "'"),
        ("<https://example.com/a>", "https://example.com/a", "&gt;"),
        ('"https://example.com/a"', "https://example.com/a", '"'),
    ],
)
def test_trailing_punctuation_stays_out_of_links(text: str, url: str, after: str) -> None:
    html = to_html(text)
    assert f'<a href="{url}" ' in html
    assert html.endswith("</a>" + after + "</p>")


def test_links_keep_fragments_and_at_signs() -> None:
    html = to_html("https://example.com/page#section and https://mastodon.example/@bob@other.example")
    assert 'href="https://example.com/page#section"' in html
    assert 'href="https://mastodon.example/@bob@other.example"' in html
    assert "hashtag" not in html
    assert "h-card" not in html
    assert extract_hashtags("https://example.com/page#section") == []
    assert extract_mentions("https://mastodon.example/@bob@other.example") == []


def test_only_http_links_are_linked() -> None:
    html = to_html("javascript:alert(1) ftp://example.com/ https:// https://")
    assert "<a" not in html


def test_mentions_are_linked_when_resolved() -> None:
    links = {"bob@remote.example": "https://remote.example/@bob"}
    html = to_html("hi @Bob@Remote.Example and @carol@unknown.example!", links)
    assert html == (
        '<p>hi <span class="h-card"><a href="https://remote.example/@bob" class="u-url mention">'
        "@<span>Bob</span></a></span> and @carol@unknown.example!</p>"
    )


def test_mention_links_keys_ignore_case_and_at_sign() -> None:
    html = to_html("@bob@remote.example", {"@Bob@Remote.Example": "https://remote.example/@bob"})
    assert 'href="https://remote.example/@bob"' in html


def test_bare_mentions_use_the_default_domain() -> None:
    text = "@alice and @bob@remote.example"
    assert extract_mentions(text) == ["bob@remote.example"]
    assert extract_mentions(text, default_domain="home.example") == ["alice@home.example", "bob@remote.example"]
    links = {"alice@home.example": "https://home.example/@alice"}
    assert 'href="https://home.example/@alice"' in to_html(text, links, default_domain="home.example")
    assert "<a" not in to_html(text, links)


def test_email_addresses_are_not_mentions() -> None:
    text = "write to bob@remote.example or bob.smith@remote.example"
    assert extract_mentions(text) == []
    assert to_html(text, {"remote.example@remote.example": "https://x.example/"}) == f"<p>{text}</p>"


def test_mention_ends_before_trailing_punctuation() -> None:
    assert extract_mentions("thanks @bob@remote.example. And @Carol@Other.Example, @bob@remote.example") == [
        "bob@remote.example",
        "carol@other.example",
    ]


def test_hashtags_are_linked() -> None:
    assert to_html("#Fediverse rocks") == (
        '<p><a href="https://home.example/tags/fediverse" class="mention hashtag" rel="tag">'
        "#<span>Fediverse</span></a> rocks</p>"
    )


@pytest.mark.parametrize(
    ("text", "tags"),
    [
        ("#One #two, #ONE and #three.", ["one", "two", "three"]),
        ("C# and F# are languages, foo#bar is not a tag", []),
        ("#123 is a number, #1st is a tag", ["1st"]),
        ("#日本語 #Café #ｆｕｌｌ", ["日本語", "café", "full"]),
        ("#snake_case #with·dot", ["snake_case", "with·dot"]),
        ("(#paren) x=#eq /#slash", ["paren"]),
        ("#", []),
    ],
)
def test_hashtag_rules(text: str, tags: list[str]) -> None:
    assert extract_hashtags(text) == tags


def test_linked_hashtags_and_mentions_match_extraction() -> None:
    text = (
        "@alice@one.example #Alpha https://example.com/#beta C#gamma\n\n"
        "@ALICE@one.example @bob@two.example #alpha #Delta mail@three.example"
    )
    linked_tags: list[str] = []

    def recording_tag_url(tag: str) -> str:
        linked_tags.append(tag)
        return tag_url(tag)

    handles = extract_mentions(text)
    links = {handle: f"https://profiles.example/{handle}" for handle in handles}
    html = plain_text_to_html(text, mention_links=links, tag_url=recording_tag_url)
    assert handles == ["alice@one.example", "bob@two.example"]
    assert list(dict.fromkeys(linked_tags)) == extract_hashtags(text) == ["alpha", "delta"]
    linked_profiles = re.findall(r'href="https://profiles\.example/([^"]+)"', html)
    assert list(dict.fromkeys(linked_profiles)) == handles


def test_normalize_hashtag() -> None:
    assert normalize_hashtag("#FediVerse") == "fediverse"
    assert normalize_hashtag("ＴＡＧ") == "tag"


def test_local_html_survives_sanitizing() -> None:
    text = (
        "Hi @bob@remote.example, see https://www.example.com/a/very/long/path/that/goes/on #Tag\n"
        "<em>not markup</em> & more\n\nbye"
    )
    html = to_html(text, {"bob@remote.example": "https://remote.example/@bob"})
    cleaned = sanitize_html(html)
    assert_only_allowed_markup(cleaned)
    # Sanitizing only forces target and rel on the links; text and classes stay.
    without_link_attributes = re.sub(r' (?:target|rel)="[^"]*"', "", cleaned)
    assert without_link_attributes == re.sub(r' (?:target|rel)="[^"]*"', "", html)


# ---------------------------------------------------------------- HTML → text


def test_html_to_text_paragraphs_breaks_entities() -> None:
    html = "<p>first  line<br>second\n line &amp; &lt;tag&gt; &quot;q&quot;</p><p>next</p>"
    assert html_to_text(html) == 'first line\nsecond line & <tag> "q"\n\nnext'


def test_html_to_text_prints_shortened_links_in_full() -> None:
    html = to_html("read https://www.example.com/a/very/long/path/that/goes/on now")
    assert html_to_text(html) == "read https://www.example.com/a/very/long/path/that/goes/on now"


def test_html_to_text_mentions_hashtags_and_labelled_links() -> None:
    html = (
        '<p><span class="h-card"><a href="https://remote.example/@bob" class="u-url mention">@<span>bob</span></a>'
        '</span> <a href="https://home.example/tags/x" class="mention hashtag">#<span>x</span></a> '
        '<a href="https://example.com/issue/1">Issue 1</a> <a href="https://example.com/">example.com/</a> '
        '<a href="mailto:alice@example.com">alice@example.com</a></p>'
    )
    assert html_to_text(html) == (
        "@bob #x Issue 1 <https://example.com/issue/1> example.com/ alice@example.com"
    )


def test_html_to_text_lists_quotes_and_code() -> None:
    html = (
        "<p>intro</p><ul><li>one</li><li>two<br>lines</li></ul><ol><li>first</li><li>second</li></ol>"
        "<blockquote><p>quoted</p><p>twice</p></blockquote><pre><code>a  =  1\n  b</code></pre>"
    )
    assert html_to_text(html) == (
        "intro\n\n- one\n- two\n  lines\n\n1. first\n2. second\n\n> quoted\n>\n> twice\n\na  =  1\n  b"
    )


def test_html_to_text_removes_terminal_control_characters() -> None:
    assert html_to_text("<p>red\x1b[31m alert\x07\x9b2J</p>") == "red[31m alert2J"


def test_html_to_text_of_sanitized_hostile_input() -> None:
    html = sanitize_html("<h1>Title</h1><script>alert(1)</script><div>a</div><div>b</div>")
    assert html_to_text(html) == "Title\n\na b"


def test_html_to_text_survives_deep_nesting() -> None:
    html = sanitize_html("<blockquote>" * 2_000 + "deep")
    assert html_to_text(html) == "> " * 2_000 + "deep"
