"""An email's HTML part, made safe to show inside the portal.

Two independent walls, so that a miss in one is caught by the other:

1. nh3 (ammonia) keeps only formatting: no scripts, event handlers, forms, frames, objects,
   SVG/MathML, ``<base>``, ``<meta>``, ``<style>`` blocks (their CSS cannot be filtered per
   property, and ``@import``/``@font-face``/``position`` live there), no ``srcset``; links keep
   http(s)/mailto only; style attributes keep a list of layout-safe properties (no
   ``position``, ``z-index``, ``transform``, ``content``...), so nothing can be laid over the
   portal's page or over the frame's own edges. ``cid:`` images are rewritten to the portal's
   inline-image route; remote images are dropped unless the member allowed the sender's.
2. The result is shown in ``<iframe sandbox srcdoc>`` (no ``allow-scripts``, no
   ``allow-same-origin``: an opaque origin without the portal's cookies or DOM), whose document
   carries its own CSP: nothing loads but the inline-image route (and remote images when
   allowed); no fonts, frames, forms, or base URL.

It lives in portal because the local Outbox (portal) shows HTML mail in the same frame;
it knows nothing of Django's models: `mailsync.display` feeds it a synced message's raw bytes
and the URLs to use.
"""

from __future__ import annotations

import email
import re
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from html import escape

import nh3
from csp.constants import UNSAFE_INLINE
from django.http import HttpResponse

__all__ = [
    "INLINE_IMAGE_TYPES",
    "FramedHtml",
    "HtmlPart",
    "SafeHtml",
    "allow_frame",
    "frame_document",
    "framed_html",
    "html_part",
    "inline_image",
    "sanitize",
]

# Raster images only: an SVG served from the portal's origin could carry script.
INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp"})
# data: images (small logos pasted into the body) are kept; other data: URLs are not.
_DATA_IMAGE = re.compile(r"^data:image/(png|jpeg|gif|webp|bmp)[;,]", re.IGNORECASE)
_REMOTE = re.compile(r"^https?://", re.IGNORECASE)
_CSS_REMOTE_URL = re.compile(r"url\(\s*['\"]?\s*(https?:)?//", re.IGNORECASE)
# A style attribute with any of these is dropped whole rather than repaired: CSS escapes can
# spell any word, and the rest are old script hooks or rules with no place in an attribute.
_CSS_REFUSED = re.compile(r"\\|expression|javascript:|vbscript:|@import|behavior|binding|<", re.I)

TAGS = frozenset(
    {
        *("a", "abbr", "address", "article", "b", "bdi", "bdo", "big", "blockquote", "br"),
        *("caption", "center", "cite", "code", "col", "colgroup", "dd", "del", "dfn", "div"),
        *("dl", "dt", "em", "figcaption", "figure", "font", "footer", "h1", "h2", "h3", "h4"),
        *("h5", "h6", "header", "hr", "i", "img", "ins", "kbd", "li", "main", "mark", "ol"),
        *("p", "pre", "q", "s", "samp", "section", "small", "span", "strike", "strong", "sub"),
        *("sup", "table", "tbody", "td", "tfoot", "th", "thead", "time", "tr", "tt", "u", "ul"),
        *("var", "wbr"),
    }
)
# Dropped with everything inside them (other unknown tags lose the tag and keep their text).
DROPPED_WITH_CONTENT = frozenset(
    {
        *("applet", "audio", "embed", "frame", "frameset", "head", "iframe", "math", "meta"),
        *("noembed", "noframes", "noscript", "object", "option", "script", "select", "style"),
        *("svg", "template", "textarea", "title", "video", "xmp"),
    }
)
ATTRIBUTES = {
    "*": {"align", "valign", "dir", "lang", "title", "style"},
    "a": {"href"},
    "img": {"src", "alt", "width", "height", "border", "hspace", "vspace"},
    "table": {"width", "height", "border", "cellpadding", "cellspacing", "bgcolor"},
    "td": {"width", "height", "bgcolor", "colspan", "rowspan", "nowrap", "scope"},
    "th": {"width", "height", "bgcolor", "colspan", "rowspan", "nowrap", "scope"},
    "tr": {"height", "bgcolor"},
    "col": {"span", "width"},
    "colgroup": {"span", "width"},
    "font": {"color", "face", "size"},
    "ol": {"start", "type", "reversed"},
    "ul": {"type"},
    "li": {"value", "type"},
    "hr": {"width", "size", "noshade", "color"},
    "time": {"datetime"},
}
# Properties that style text and boxes in place. Left out on purpose: position, top/left/
# right/bottom, z-index, transform, content, cursor, filter, animation, transition, overflow.
# background(-image) may name url(): the frame's CSP decides whether such a picture loads.
STYLE_PROPERTIES = frozenset(
    {
        *("background", "background-color", "background-image", "background-position"),
        *("background-repeat", "background-size", "border", "border-bottom"),
        *("border-bottom-color", "border-bottom-style", "border-bottom-width"),
        *("border-collapse", "border-color", "border-left", "border-left-color"),
        *("border-left-style", "border-left-width", "border-radius", "border-right"),
        *("border-right-color", "border-right-style", "border-right-width", "border-spacing"),
        *("border-style", "border-top", "border-top-color", "border-top-style"),
        *("border-top-width", "border-width", "caption-side", "clear", "color", "direction"),
        *("display", "empty-cells", "float", "font", "font-family", "font-size", "font-style"),
        *("font-variant", "font-weight", "height", "letter-spacing", "line-height"),
        *("list-style", "list-style-position", "list-style-type", "margin", "margin-bottom"),
        *("margin-left", "margin-right", "margin-top", "max-height", "max-width"),
        *("min-height", "min-width", "opacity", "overflow-wrap", "padding", "padding-bottom"),
        *("padding-left", "padding-right", "padding-top", "table-layout", "text-align"),
        *("text-decoration", "text-indent", "text-transform", "vertical-align", "visibility"),
        *("white-space", "width", "word-break", "word-spacing", "word-wrap"),
    }
)
# The frame's own look: readable defaults the sender's styles may override.
_FRAME_STYLE = (
    "body{margin:12px;font-family:system-ui,sans-serif;font-size:14px;line-height:1.45;"
    "color:#1d2430;overflow-wrap:anywhere}img{max-width:100%}"
)


@dataclass(frozen=True)
class HtmlPart:
    """A message's HTML body, and the Content-IDs of its inline raster images."""

    html: str
    content_ids: frozenset[str]


@dataclass(frozen=True)
class SafeHtml:
    html: str  # the sanitised fragment
    blocked_images: int  # remote pictures left out (images, CSS backgrounds)
    remote_images: bool  # remote pictures were kept (the member allowed this sender's)


def _parse(raw: bytes) -> EmailMessage | None:
    try:
        parsed = email.message_from_bytes(raw, policy=policy.default)
    except Exception:
        return None
    return parsed if isinstance(parsed, EmailMessage) else None


def _content_id(part: EmailMessage) -> str:
    value = str(part.get("Content-ID", "") or "").strip()
    return value[1:-1].strip() if value.startswith("<") and value.endswith(">") else value


def html_part(raw: bytes) -> HtmlPart | None:
    """The HTML the sender wrote, or None for a plain-text message (or one that cannot be
    read: the Email tab shows its text as before)."""
    parsed = _parse(raw)
    if parsed is None:
        return None
    try:
        part = parsed.get_body(preferencelist=("html",))
        if part is None:
            return None
        try:
            content = part.get_content()
        except (LookupError, UnicodeError):  # an unknown or lying charset
            content = (part.get_payload(decode=True) or b"").decode("utf-8", "replace")
        if isinstance(content, bytes):
            content = content.decode("utf-8", "replace")
        ids = set()
        for candidate in parsed.walk():
            if candidate.get_content_type() in INLINE_IMAGE_TYPES and _content_id(candidate):
                ids.add(_content_id(candidate))
    except Exception:
        return None
    return HtmlPart(html=content, content_ids=frozenset(ids))


def inline_image(raw: bytes, content_id: str) -> tuple[bytes, str] | None:
    """The bytes and type of the raster image part with this Content-ID, if there is one."""
    parsed = _parse(raw)
    if parsed is None or not content_id:
        return None
    try:
        for part in parsed.walk():
            content_type = part.get_content_type()
            if content_type in INLINE_IMAGE_TYPES and _content_id(part) == content_id:
                payload = part.get_payload(decode=True)
                return (payload, content_type) if payload else None
    except Exception:
        return None
    return None


def sanitize(
    html: str,
    *,
    inline_url: Callable[[str], str | None],
    remote_images: bool,
) -> SafeHtml:
    """``html`` with only formatting left (see the module's notes).

    ``inline_url`` maps a ``cid:`` reference to the URL serving that image (None: drop it).
    Remote images are kept only with ``remote_images``; otherwise they are counted.
    """
    blocked = 0

    def attribute(tag: str, name: str, value: str) -> str | None:
        nonlocal blocked
        if name == "style":
            if _CSS_REFUSED.search(value):
                return None
            found = len(_CSS_REMOTE_URL.findall(value))
            if found and not remote_images:
                blocked += found  # the frame's CSP stops them; the member is told how many
            return value
        if name == "href":
            url = value.strip()
            return url if _REMOTE.match(url) or url[:7].lower() == "mailto:" else None
        if name == "src":
            url = value.strip()
            if url[:4].lower() == "cid:":
                return inline_url(url[4:])
            if _DATA_IMAGE.match(url):
                return url
            if _REMOTE.match(url):
                if remote_images:
                    return url
                blocked += 1
            return None
        return value

    cleaned = nh3.clean(
        html,
        tags=set(TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        attributes={tag: set(names) for tag, names in ATTRIBUTES.items()},
        attribute_filter=attribute,
        url_schemes={"http", "https", "mailto", "cid", "data"},
        url_relative="deny",  # relative URLs would resolve against the portal
        filter_style_properties=set(STYLE_PROPERTIES),
        set_tag_attribute_values={"a": {"target": "_blank"}},
        link_rel="noopener noreferrer",
        strip_comments=True,
    )
    return SafeHtml(html=cleaned, blocked_images=blocked, remote_images=remote_images)


def frame_policy(*, inline_prefix: str | None, remote_images: bool) -> str:
    """The CSP of the frame's document: only the message's own inline images load (and
    remote ones, when allowed); no script, font, frame, form or base URL."""
    images = ["data:"]
    if inline_prefix:
        images.insert(0, inline_prefix)
    if remote_images:
        images += ["https:", "http:"]
    return "; ".join(
        [
            "default-src 'none'",
            "style-src 'unsafe-inline'",
            "img-src " + " ".join(images),
            "form-action 'none'",
            "base-uri 'none'",
        ]
    )


def frame_document(safe: SafeHtml, *, inline_prefix: str | None) -> str:
    """The whole document for ``<iframe srcdoc>``: its CSP first, then the sanitised body."""
    csp = frame_policy(inline_prefix=inline_prefix, remote_images=safe.remote_images)
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(csp)}">'
        '<meta name="referrer" content="no-referrer">'
        f"<style>{_FRAME_STYLE}</style></head><body>{safe.html}</body></html>"
    )


@dataclass(frozen=True)
class FramedHtml:
    """What the frame's template (portal/_html_frame.html) needs."""

    srcdoc: str
    blocked_images: int
    remote_images: bool

    @classmethod
    def build(cls, safe: SafeHtml, *, inline_prefix: str | None) -> FramedHtml:
        return cls(
            srcdoc=frame_document(safe, inline_prefix=inline_prefix),
            blocked_images=safe.blocked_images,
            remote_images=safe.remote_images,
        )


def framed_html(raw: bytes, *, rewrite: Callable[[str], str] | None = None) -> FramedHtml | None:
    """A raw email's HTML part for the frame, without inline or remote images (the local
    Outbox: the portal's own mail has no inline images, and reading it must not load
    anything from elsewhere). ``rewrite`` changes the HTML before it is sanitised (e.g. to
    hide links that are credentials, as the Outbox does with its text)."""
    part = html_part(raw)
    if part is None:
        return None
    html = rewrite(part.html) if rewrite is not None else part.html
    safe = sanitize(html, inline_url=lambda _cid: None, remote_images=False)
    return FramedHtml.build(safe, inline_prefix=None)


def allow_frame(response: HttpResponse, framed: FramedHtml | None) -> HttpResponse:
    """Let a page carry the frame: a srcdoc document is bound by its page's CSP on top of its
    own, so the page must allow the inline styles the sender's HTML keeps (and remote
    pictures when the member chose to see them). The portal's own markup has no inline
    style, and the frame's own CSP still allows nothing else."""
    if framed is not None:
        update: dict[str, list[str]] = {"style-src": [UNSAFE_INLINE]}
        if framed.remote_images:
            update["img-src"] = ["https:", "http:"]
        response._csp_update = update  # type: ignore[attr-defined]  # read by django-csp
    return response
