#!/usr/bin/env python3
"""Generates corpus.tsv: a labelled PII corpus for switchyard-sanitizers' pii module.

Format, one example a line: `<expected kind or none>\t<text>`. Lines starting with `#` are
comments. Kinds: ssn, credit_card, api_key, jwt, email, phone, ip, none.

A positive line counts as found when the detector reports a match of that kind anywhere in
the text; a `none` line is a false positive when the default detector (every kind but ip)
reports anything. The generator is deterministic (fixed seed); hand-written lines live in
`handwritten.tsv` and are appended verbatim.

    python3 sanitizers/testdata/pii/gen_corpus.py > sanitizers/testdata/pii/corpus.tsv
"""

import base64
import json
import os
import random
import string

R = random.Random(20240115)
ALNUM = string.ascii_letters + string.digits
B64URL = ALNUM + "-_"
HEX = "0123456789abcdef"


def rs(alphabet, n):
    return "".join(R.choice(alphabet) for _ in range(n))


def rs_digit(alphabet, n):
    while True:
        s = rs(alphabet, n)
        if any(c.isdigit() for c in s) and any(c.isalpha() for c in s):
            return s


def luhn_complete(prefix, length):
    body = prefix + "".join(R.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # will be doubled once the check digit is appended
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return body + str((10 - total % 10) % 10)


def luhn_ok(num):
    total = 0
    for i, ch in enumerate(reversed(num)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


BRANDS = [
    ("visa", lambda: "4", [16, 16, 16, 13, 19]),
    ("mastercard", lambda: str(R.randint(51, 55)), [16]),
    ("mastercard2", lambda: str(R.randint(2221, 2720)), [16]),
    ("amex", lambda: R.choice(["34", "37"]), [15]),
    ("discover", lambda: R.choice(["6011", str(R.randint(644, 649)), "65"]), [16, 19]),
    ("jcb", lambda: str(R.randint(3528, 3589)), [16]),
    ("diners", lambda: R.choice([str(R.randint(300, 305)), "36", "38", "39"]), [14, 16]),
    ("unionpay", lambda: "62", [16, 19]),
    ("maestro", lambda: R.choice(["50", "56", "57", "58", "6304", "6759", "6761", "6762", "6763"]), [16, 19]),
]


def card():
    name, pre, lens = R.choice(BRANDS)
    n = luhn_complete(pre(), R.choice(lens))
    style = R.random()
    if name == "amex" and style < 0.4:
        return f"{n[:4]} {n[4:10]} {n[10:]}"
    if len(n) == 16 and style < 0.35:
        return " ".join(n[i:i + 4] for i in range(0, 16, 4))
    if len(n) == 16 and style < 0.6:
        return "-".join(n[i:i + 4] for i in range(0, 16, 4))
    return n


def ssn(fmt=None):
    while True:
        a = R.randint(1, 899)
        if a != 666:
            break
    g, s = R.randint(1, 99), R.randint(1, 9999)
    fmt = fmt or R.choice(["-", "-", "-", " "])
    return f"{a:03d}{fmt}{g:02d}{fmt}{s:04d}"


FIRST = ["john", "jane", "maria", "li", "ahmed", "olga", "pierre", "sofia", "kenji", "emma", "noah",
         "fatima", "lucas", "chloe", "raj", "anna", "tom", "zoe", "omar", "ines"]
LAST = ["smith", "doe", "garcia", "wang", "khan", "ivanova", "dubois", "rossi", "tanaka", "brown",
        "muller", "silva", "nguyen", "kowalski", "oconnor", "patel", "jensen", "lopez"]
DOMAINS = ["example.com", "gmail.com", "yahoo.co.uk", "mail.example.org", "company.io", "uni.edu",
           "outlook.com", "proton.me", "sub.domain.example.net", "acme-corp.de", "startup.ai",
           "web.fr", "correo.es", "posteo.de", "firm.co.jp", "agency.com.au"]


def email():
    f, l = R.choice(FIRST), R.choice(LAST)
    local = R.choice([f"{f}.{l}", f"{f}{l}", f"{f}_{l}", f"{f[0]}{l}", f"{f}.{l}{R.randint(1, 99)}",
                      f"{f}+{R.choice(['news', 'shop', 'test'])}", f"{f}-{l}", f"{l}{R.randint(1970, 2005)}"])
    if R.random() < 0.1:
        local = local.upper()
    return f"{local}@{R.choice(DOMAINS)}"


def us_phone():
    a = R.randint(201, 989)
    e = R.randint(200, 999)
    n = R.randint(0, 9999)
    fmt = R.choice([
        "({a}) {e}-{n}", "{a}-{e}-{n}", "{a}.{e}.{n}", "+1 {a} {e} {n}", "+1-{a}-{e}-{n}",
        "1-{a}-{e}-{n}", "+1 ({a}) {e}-{n}", "({a}){e}-{n}", "{a} {e} {n}", "+1{a}{e}{n}",
        "1 ({a}) {e}-{n}", "+1.{a}.{e}.{n}",
    ])
    return fmt.format(a=a, e=e, n=f"{n:04d}")


def d(n):
    return "".join(R.choice(string.digits) for _ in range(n))


def intl_phone():
    return R.choice([
        lambda: f"+44 20 {d(4)} {d(4)}",
        lambda: f"+44 7{d(3)} {d(6)}",
        lambda: f"+49 30 {d(8)}",
        lambda: f"+49 (0)151 {d(8)}",
        lambda: f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
        lambda: f"+33 6 {d(2)} {d(2)} {d(2)} {d(2)}",
        lambda: f"+91 9{d(4)} {d(5)}",
        lambda: f"+81 3-{d(4)}-{d(4)}",
        lambda: f"+81 90-{d(4)}-{d(4)}",
        lambda: f"+61 2 {d(4)} {d(4)}",
        lambda: f"+61 4{d(2)} {d(3)} {d(3)}",
        lambda: f"+55 11 9{d(4)}-{d(4)}",
        lambda: f"+52 55 {d(4)} {d(4)}",
        lambda: f"+86 10 {d(4)} {d(4)}",
        lambda: f"+86 13{d(1)} {d(4)} {d(4)}",
        lambda: f"+7 495 {d(3)}-{d(2)}-{d(2)}",
        lambda: f"+34 6{d(2)} {d(3)} {d(3)}",
        lambda: f"+39 06 {d(4)} {d(4)}",
        lambda: f"+31 20 {d(3)} {d(4)}",
        lambda: f"+46 8 {d(3)} {d(3)} {d(2)}",
        lambda: f"+65 {R.choice('689')}{d(3)} {d(4)}",
        lambda: f"+27 21 {d(3)} {d(4)}",
        lambda: f"+234 80{d(1)} {d(3)} {d(4)}",
        lambda: f"+254 7{d(2)} {d(6)}",
        lambda: f"+971 50 {d(3)} {d(4)}",
        lambda: f"+972 54-{d(3)}-{d(4)}",
        lambda: f"+82 10-{d(4)}-{d(4)}",
        lambda: f"+353 1 {d(3)} {d(4)}",
        lambda: f"+41 44 {d(3)} {d(2)} {d(2)}",
        lambda: f"+48 {d(3)} {d(3)} {d(3)}",
        lambda: f"+{R.choice(['44', '49', '33', '91', '61', '34'])}{R.randint(1, 9)}{d(9)}",
        lambda: f"+1 ({R.randint(201, 989)}) {R.randint(200, 999)}-{d(4)}",
        lambda: f"+44.20.{d(4)}.{d(4)}",
    ])()


def api_key():
    return R.choice([
        lambda: R.choice(["AKIA", "ASIA", "AGPA", "AIDA", "AROA"]) + rs(string.ascii_uppercase + "234567", 16),
        lambda: R.choice(["sk_live_", "sk_test_", "rk_live_", "pk_live_", "rk_test_"]) + rs(ALNUM, R.choice([24, 34, 99])),
        lambda: "whsec_" + rs(ALNUM, 32),
        lambda: R.choice(["ghp_", "gho_", "ghu_", "ghs_", "ghr_"]) + rs_digit(ALNUM, 36),
        lambda: "github_pat_" + rs(ALNUM, 22) + "_" + rs(ALNUM, 59),
        lambda: R.choice(["xoxb-", "xoxp-", "xoxa-", "xoxr-", "xoxs-"]) + d(12) + "-" + d(13) + "-" + rs(ALNUM, 24),
        lambda: f"https://hooks.slack.com/services/T{rs(string.ascii_uppercase + string.digits, 8)}/B{rs(string.ascii_uppercase + string.digits, 10)}/{rs(ALNUM, 24)}",
        lambda: "AIza" + rs(B64URL, 35),
        lambda: "sk-" + rs_digit(ALNUM, 48),
        lambda: "sk-proj-" + rs_digit(B64URL, R.choice([48, 74, 120])),
        lambda: "SG." + rs(B64URL, 22) + "." + rs(B64URL, 43),
        lambda: R.choice(["AC", "SK"]) + rs_digit(HEX, 32),
        lambda: "npm_" + rs(ALNUM, 36),
        lambda: "glpat-" + rs(B64URL, 20),
        lambda: "hf_" + rs(ALNUM, 34),
    ])()


def secret_param():
    name = R.choice(["token", "password", "secret", "api_key", "access_token", "key", "apikey",
                     "refresh_token", "client_secret", "auth_token", "aws_secret_access_key", "passwd"])
    val = R.choice([
        lambda: rs(ALNUM, R.randint(8, 40)),
        lambda: R.choice(["hunter2", "P@ssw0rd!", "letmein123", "abc123", "s3cr3t", "correct-horse-battery"]),
        lambda: rs(HEX, 32),
        lambda: rs(ALNUM + "/+", 40),
    ])()
    return name, val


def jwt():
    header = {"alg": R.choice(["HS256", "RS256", "ES256"]), "typ": "JWT"}
    payload = {"sub": d(8), "name": R.choice(FIRST).title(), "iat": 1700000000 + R.randint(0, 10**7)}
    if R.random() < 0.5:
        payload["email"] = email()
    enc = lambda o: base64.urlsafe_b64encode(json.dumps(o, separators=(",", ":")).encode()).decode().rstrip("=")
    return f"{enc(header)}.{enc(payload)}.{rs(B64URL, R.choice([43, 86, 342]))}"


def ipv4():
    return R.choice([
        lambda: f"{R.randint(1, 223)}.{R.randint(0, 255)}.{R.randint(0, 255)}.{R.randint(1, 254)}",
        lambda: f"10.{R.randint(0, 255)}.{R.randint(0, 255)}.{R.randint(1, 254)}",
        lambda: f"192.168.{R.randint(0, 255)}.{R.randint(1, 254)}",
        lambda: f"203.0.113.{R.randint(1, 254)}",
    ])()


def ipv6():
    g = lambda: f"{R.randint(0, 0xffff):x}"
    return R.choice([
        lambda: ":".join(f"{R.randint(0, 0xffff):04x}" for _ in range(8)),
        lambda: f"2001:db8::{g()}",
        lambda: f"2001:db8:{g()}:{g()}::{g()}",
        lambda: f"fe80::{g()}:{g()}:{g()}:{g()}",
        lambda: "::1",
        lambda: f"2a00:1450:4001:{g()}::200e",
    ])()


# Context templates. {v} is the value. Neutral field names only, so that a value is never an api_key
# just because of its label.
CTX = [
    "{v}", "{v}", "contact: {v}", "User entered {v} in the signup form.", "my details are {v}, thanks!",
    '{{"value": "{v}"}}', '{{"properties": {{"$set": {{"field": "{v}"}}}}, "event": "signup"}}',
    "({v})", "[{v}]", "'{v}'", '"{v}"', "<{v}>", "{v}.", "see {v};",
    "2024-01-15T10:20:30Z INFO form_submit value={v} duration_ms=132",
    "42,{v},2024-01-15,ok", "note|{v}|end", "Please reach out at {v} before 5pm on 12/31.",
    "\u00bfHola? Mi dato: {v} gracias", "ticket #4521 updated by support: {v}",
]

URL_CTX = [
    "https://shop.example.com/checkout?step=2&value={v}&utm_source=google",
    "/api/v1/users?filter={v}",
]


def ctx(v, url_ok=True):
    pool = CTX + (URL_CTX if url_ok else [])
    return R.choice(pool).format(v=v)


def emit(kind, text):
    assert "\t" not in text and "\n" not in text, text
    print(f"{kind}\t{text}")


def positives():
    for _ in range(80):
        emit("ssn", ctx(ssn()))
    for _ in range(10):
        emit("ssn", R.choice(["SSN: {n}", "ssn={n}", '{{"ssn":"{n}"}}', "social security number {n}"]).format(
            n=ssn("-").replace("-", "")))
    for _ in range(110):
        emit("credit_card", ctx(card()))
    for _ in range(110):
        emit("api_key", ctx(api_key()))
    for _ in range(40):
        name, val = secret_param()
        emit("api_key", R.choice([
            "https://app.example.com/callback?{n}={v}&state=xyz",
            "POST /login {n}={v}&remember=1",
            '{{"{n}": "{v}", "user": "bob"}}',
            "export {N}={v}",
            "{n}={v}",
        ]).format(n=name, N=name.upper(), v=val))
    for _ in range(15):
        tok = rs_digit(ALNUM + "-._~", R.randint(20, 60))
        emit("api_key", R.choice([
            "Authorization: Bearer {t}", "curl -H 'Authorization: Bearer {t}' https://api.example.com",
            "headers={{\"Authorization\": \"Bearer {t}\"}}", "bearer {t}", "Authorization: Token {t}",
        ]).format(t=tok))
    for _ in range(6):
        user, pw = R.choice(FIRST), R.choice(["hunter2", "s3cr3t!", rs(ALNUM, 12)])
        emit("api_key", f"Authorization: Basic {base64.b64encode(f'{user}:{pw}'.encode()).decode()}")
    for _ in range(6):
        emit("api_key", f"{R.choice(['postgres', 'mysql', 'redis', 'https', 'amqp'])}://{R.choice(FIRST)}:{rs(ALNUM, 14)}@db.internal.example.com:5432/app")
    for _ in range(45):
        t = jwt()
        emit("jwt", R.choice([
            "{t}", "Authorization: Bearer {t}", '{{"id_token":"{t}"}}', "https://app.example.com/cb#access_token={t}&token_type=bearer",
            "cookie: session={t}; path=/", "jwt={t}",
        ]).format(t=t))
    for _ in range(110):
        e = email()
        if R.random() < 0.15:
            emit("email", R.choice([
                "https://x.com/a?email={v}&token_type=none",
                "/unsubscribe?e={v}",
                "https://example.com/invite?to={v}&ref=share",
            ]).format(v=e.replace("@", "%40").replace("+", "%2B")))
        else:
            emit("email", ctx(e))
    for _ in range(70):
        emit("phone", ctx(us_phone()))
    for _ in range(90):
        emit("phone", ctx(intl_phone()))
    for _ in range(6):
        emit("phone", R.choice(["tel:{p}", "phone=%2B{q}", "<a href=\"tel:{p}\">call</a>"]).format(
            p="+" + R.choice(["1", "44", "49"]) + d(10), q=R.choice(["1", "44", "49"]) + d(10)))
    for _ in range(30):
        emit("ip", ctx(ipv4(), url_ok=False))
    for _ in range(20):
        v = ipv6()
        emit("ip", R.choice(["client {v} connected", "X-Forwarded-For: {v}", "[{v}]:8080", "{v}", '{{"ip":"{v}"}}']).format(v=v))


def uuid():
    h = rs(HEX, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{R.choice('89ab')}{h[17:20]}-{h[20:]}"


def non_luhn16():
    while True:
        n = d(16)
        if not luhn_ok(n):
            return n


def negatives():
    gens = [
        lambda: f"request_id={uuid()}",
        lambda: f"anonymous_id: {uuid()}",
        lambda: uuid().upper(),
        lambda: f"commit {rs(HEX, 40)}",
        lambda: f"sha256:{rs(HEX, 64)}",
        lambda: f"etag \"{rs(HEX, 32)}\"",
        lambda: f"ts={1600000000 + R.randint(0, 10**8)}",
        lambda: f"timestamp_ms: {1600000000000 + R.randint(0, 10**11)}",
        lambda: f"{{\"ts\": {1600000000000 + R.randint(0, 10**11)}, \"event\": \"pageview\"}}",
        lambda: f"price ${R.randint(1, 9999)}.{d(2)}",
        lambda: f"total: {R.randint(1000, 99999)}.{d(2)} EUR",
        lambda: f"${R.randint(1, 999)},{d(3)}.{d(2)}",
        lambda: f"{R.randint(2000, 2030)}-{R.randint(1, 12):02d}-{R.randint(1, 28):02d}",
        lambda: f"{R.randint(1, 12):02d}/{R.randint(1, 28):02d}/{R.randint(2000, 2030)}",
        lambda: f"{R.randint(2000, 2030)}-{R.randint(1, 12):02d}-{R.randint(1, 28):02d}T{R.randint(0, 23):02d}:{R.randint(0, 59):02d}:{R.randint(0, 59):02d}.{d(3)}Z",
        lambda: f"{R.randint(2000, 2030)}-{R.randint(1, 12):02d}-{R.randint(1, 28):02d} {R.randint(0, 23):02d}:{R.randint(0, 59):02d}:{R.randint(0, 59):02d}+05:30",
        lambda: f"app version {R.randint(0, 20)}.{R.randint(0, 30)}.{R.randint(0, 99)}",
        lambda: f"v{R.randint(0, 20)}.{R.randint(0, 30)}.{R.randint(0, 99)}-beta.{R.randint(1, 9)}",
        lambda: f"$os_version: {R.randint(10, 17)}.{R.randint(0, 15)}.{R.randint(0, 9)}",
        lambda: f"npm install {R.choice(['lodash', 'react', 'left-pad', '@babel/core'])}@{R.randint(1, 20)}.{R.randint(0, 9)}.{R.randint(0, 30)}",
        lambda: f"zip {d(5)}",
        lambda: f"ZIP+4: {d(5)}-{d(4)}",
        lambda: f"card ref {non_luhn16()}",
        lambda: f"order {non_luhn16()[:4]}-{non_luhn16()[:4]}-{d(4)}",
        lambda: f"order_id={R.randint(10**9, 10**10 - 1)}",
        lambda: f"Order #{R.randint(100000, 999999)} shipped",
        lambda: f"ORD-{R.randint(2020, 2025)}-{d(6)}",
        lambda: f"tracking 1Z{rs(string.ascii_uppercase + string.digits, 16)}",
        lambda: f"USPS 9400 {d(4)} {d(4)} {d(4)} {d(4)} {d(2)}",
        lambda: f"client_ip={ipv4()}",
        lambda: f"X-Forwarded-For: {ipv4()}, {ipv4()}",
        lambda: f"server [{ipv6()}]:443",
        lambda: f"{R.randint(1, 999)} items",
        lambda: f"page {R.randint(1, 99)} of {R.randint(100, 200)}",
        lambda: f"posthog.init('phc_{rs(ALNUM, 43)}')",
        lambda: f'{{"api_key": "phc_{rs(ALNUM, 43)}", "event": "$pageview"}}',
        lambda: f'{{"token": "phc_{rs(ALNUM, 43)}"}}',
        lambda: f"https://us.i.posthog.com/decide/?v=3&token=phc_{rs(ALNUM, 43)}",
        lambda: f"duration {R.randint(1, 99999)}ms at {R.randint(0, 23):02d}:{R.randint(0, 59):02d}",
        lambda: f"lat {R.uniform(-90, 90):.6f}, lng {R.uniform(-180, 180):.6f}",
        lambda: f"screen {R.choice([1920, 2560, 1440])}x{R.choice([1080, 1440, 900])}",
        lambda: f"build {R.randint(1000, 99999)}.{R.randint(1, 999)}",
        lambda: f"color #{rs(HEX, 6)}",
        lambda: f"{R.randint(1, 99)}% of {R.randint(1000, 9999999)} users",
        lambda: f"+{R.randint(1, 99)}.{d(1)}% week over week",
        lambda: f"count {R.randint(1, 999)},{d(3)},{d(3)}",
        lambda: f"ISBN 978-{d(1)}-{d(2)}-{d(6)}-{d(1)}",
        lambda: f"session {rs(ALNUM, 24)}",
        lambda: f"distinct_id: user_{d(6)}",
        lambda: f"$current_url: https://app.example.com/projects/{d(5)}/settings?tab=members",
        lambda: f"file asset/icon@{R.randint(2, 3)}x.png",
        lambda: f"duration={R.randint(1, 9)}h{R.randint(0, 59)}m",
        lambda: f"epoch_us {1700000000000000 + R.randint(0, 10**12)}",
    ]
    for _ in range(330):
        emit("none", R.choice(gens)())


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    print("# Generated by gen_corpus.py (seed 20240115) + handwritten.tsv. Format: <kind|none>\\t<text>")
    positives()
    negatives()
    with open(os.path.join(here, "handwritten.tsv"), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line:
                print(line)


if __name__ == "__main__":
    main()
