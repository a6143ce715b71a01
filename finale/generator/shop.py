"""The sock shop's catalogue and traffic mix: what log_generator.py draws its lines from.

Plain data, no code: the evaluation reads the URL weights to pick URLs busy enough to alert.
"""

# The shop: (URL, method, smallest and largest response size in bytes, relative popularity).
SHOP = (
    ("/", "GET", 8_000, 14_000, 12),
    ("/socks", "GET", 15_000, 30_000, 8),
    ("/socks/wool", "GET", 9_000, 16_000, 5),
    ("/socks/cotton", "GET", 9_000, 16_000, 5),
    ("/socks/merino", "GET", 9_000, 16_000, 4),
    ("/socks/bamboo", "GET", 9_000, 16_000, 3),
    ("/socks/cashmere", "GET", 9_000, 16_000, 2),
    ("/socks/striped", "GET", 9_000, 16_000, 3),
    ("/socks/christmas", "GET", 9_000, 16_000, 3),
    ("/socks/running", "GET", 9_000, 16_000, 3),
    ("/socks/hiking", "GET", 9_000, 16_000, 2),
    ("/socks/kids", "GET", 9_000, 16_000, 2),
    ("/socks/sale", "GET", 12_000, 25_000, 4),
    ("/search?q=wool+socks", "GET", 10_000, 20_000, 3),
    ("/cart", "GET", 5_000, 9_000, 5),
    ("/cart/add", "POST", 200, 600, 4),
    ("/cart/remove", "POST", 200, 600, 1),
    ("/checkout", "GET", 6_000, 11_000, 3),
    ("/checkout/payment", "POST", 300, 1_200, 2),
    ("/checkout/confirm", "GET", 4_000, 7_000, 2),
    ("/account", "GET", 5_000, 8_000, 2),
    ("/login", "POST", 150, 500, 2),
    ("/logout", "GET", 150, 400, 1),
    ("/api/products", "GET", 2_000, 40_000, 4),
    ("/api/products/42", "GET", 600, 2_000, 3),
    ("/api/cart", "GET", 300, 3_000, 3),
    ("/api/orders", "POST", 300, 1_500, 2),
    ("/api/stock?sku=SOCK-WOOL-42", "GET", 80, 200, 2),
    ("/api/recommendations", "GET", 1_000, 6_000, 2),
    ("/static/css/main.css", "GET", 20_000, 20_000, 4),
    ("/static/js/app.js", "GET", 90_000, 90_000, 4),
    ("/favicon.ico", "GET", 1_150, 1_150, 2),
)
URLS = tuple(url for url, *_ in SHOP)
USER_AGENTS = (
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/18.1 Safari/605.1.15"),
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
     "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Mobile Safari/537.36"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"),
    ("Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.6 Mobile/15E148 Safari/604.1"),
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.5.0",
    "python-requests/2.32.3",
)
REFERERS = ("-", "-", "https://chaussettes.io/", "https://chaussettes.io/socks",
            "https://chaussettes.io/cart", "https://www.google.com/", "https://duckduckgo.com/",
            "https://www.instagram.com/", "https://www.facebook.com/")
# Weighted status mixes: (status, weight). A 304 or a 204 sends no body, logged as "-".
OK_STATUSES = {"GET": ((200, 88), (304, 7), (302, 3), (301, 2)),
               "POST": ((200, 60), (201, 20), (302, 15), (204, 5))}
ERROR_STATUSES = ((404, 35), (500, 20), (503, 15), (403, 10), (502, 10), (400, 4), (429, 3),
                  (504, 3))
