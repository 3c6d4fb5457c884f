"""Generate a realistic sample of the H&M Kaggle data, in exactly the Kaggle formats.

    python sample_data.py                  # demo: 4,000 articles with images, ~1.2M transactions
    python sample_data.py --scale tiny     # for tests: a few seconds
    python sample_data.py --full           # the real row counts (31.8M transactions), no images
    python sample_data.py --regime habitual  # shoppers who buy the same articles again; no colours, texts, images

Writes data/raw/{articles,customers,transactions_train}.csv and images/0XX/0XXXXXXXXX.jpg.
Deterministic for a --seed (same bytes). Never overwrites existing raw files or images without
--force: a user's real Kaggle files must be safe.

How the data are made, i.e. what the later stages can learn from:
- a catalogue in the real proportions (index groups, product types, colours, patterns); each
  product comes in colourways (article_id = product_code * 1000 + variant); products launch every
  week, sell for a while and fade; some types are seasonal (swimwear in summer, coats in winter).
- customers with latent tastes: a mix of index codes (Ladieswear, Divided, Baby, ...), a few
  favourite (index, product type) pairs, favourite colours, a price level, a liking for patterns;
  a long-tailed activity level, a join date and maybe a date after which they stop buying.
- a visit is a basket of lines; a line picks an (index, type) pair from the favourites or the
  current assortment, draws a few articles of that pair by current popularity and buys the one
  that best fits the customer's colours, price level and pattern taste (and that they did not just
  buy). So content and visual similarity to past purchases predict future ones, new articles get
  bought by the customers whose tastes they match, and last week's best sellers are a fair baseline.
- repeat purchases (the same article, or another colourway, days later) and several units of one
  article in a basket (exact duplicate rows), at about the real rates.
- a few featured new articles each week (campaigns, the shop window) take a fixed share of the
  lines whatever the catalogue's size: without them, sales at the full scale spread so evenly over
  ~35k selling articles that last week's top 12 held 0.3% of the next week's sales and popularity
  scored 0.0009 (real: about 0.007).
- shop traffic with a summer peak, Black Friday, weekdays, the spring-2020 lockdown and a shop that
  stays below its 2019 level after it, so that the last weeks have about the real number of buyers.
- a packshot per article: a silhouette that follows the product type, filled with the article's
  colour and pattern, shaded, on an off-white background; colourways share shape and pattern.

That is the fashion regime (the default). --regime habitual imitates a retailer whose customers
shop for needs: most articles are on sale from the start and last (few launches), sales are
concentrated on fewer articles, and each customer has a repertoire of needs (slots) that they buy
for again and again, the same article each time unless they try another of its type; a need just
met waits until its stock at home runs out; the other lines are one-off browsing. Its articles.csv
has Kaggle's unknown values in the colour columns and no detail_desc, and there are no images
unless --images.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from tqdm import tqdm

from fde import artifacts as artifacts_mod
from fde import sample_images
from fde.cli import add_progress_flag, peak_rss_mb, run_main, summary
from fde.errors import UserError
from fde.files import atomic_path
from fde.ids import article_id_text
from fde.taxonomy import (  # the tables are also read as sample_data.COLOURS etc.
    APPEARANCES,
    COLOURS,
    DEPARTMENT_PREFIX,
    DEPARTMENT_WORDS,
    GARMENT_GROUPS,
    INDEX_TYPES,
    INDEXES,
    N_MASTERS,
    PERCEIVED_MASTERS,
    PERCEIVED_VALUES,
    PRODUCT_TYPES,
    SECTIONS,
    TYPE_NAMES,
)

END = date(2020, 9, 22)  # last day of the real transactions
FULL_START = date(2018, 9, 20)


@dataclass(frozen=True)
class Scale:
    articles: int
    customers: int
    transactions: int  # target rows; the simulation lands near it (within ~10% at demo and full scale)
    weeks: int  # history length, ending on END
    image_size: tuple[int, int]  # width, height (portrait 2:3)
    images: bool = True


SCALES = {
    "tiny": Scale(articles=360, customers=600, transactions=40_000, weeks=20, image_size=(128, 192)),
    "demo": Scale(articles=4_000, customers=50_000, transactions=1_250_000, weeks=105, image_size=(384, 576)),
    "full": Scale(articles=105_542, customers=1_371_980, transactions=31_788_324, weeks=105,
                  image_size=(384, 576), images=False),
}



@dataclass(frozen=True)
class Regime:
    """How shoppers behave, and what the catalogue tells about its articles."""

    description: str
    pre_launched: float  # share of products on sale before the history starts (the rest launch during it)
    colours_and_descriptions: bool  # articles.csv has colour columns and detail_desc (else unknown / empty)
    images: bool  # packshots are drawn by default
    popularity_sigma: float  # spread (log-normal sigma) of the products' popularity
    basket_mean_extra: float  # a visit buys 1 + Poisson(about this on average) different articles
    buyers: float = 1.0  # share of the customers who ever buy (the rest are in customers.csv only)


REGIMES = {
    "fashion": Regime("H&M-like: launches every week, tastes for types, colours and prices, some repeats",
                      pre_launched=0.25, colours_and_descriptions=True, images=True, popularity_sigma=0.55,
                      basket_mean_extra=1.7),
    "habitual": Regime("the same shoppers buy the same articles again over months, few launches, "
                       "no colours, descriptions or photos", pre_launched=0.85, colours_and_descriptions=False,
                       images=False, popularity_sigma=2.5,
                       # real habitual shops (a grocery chain, a gift wholesaler): fewer, regular buyers
                       # with baskets of 10-30 lines and repertoires of 30-200 articles
                       basket_mean_extra=25.0, buyers=0.04),
}

ARTICLE_COLUMNS = [
    "article_id", "product_code", "prod_name", "product_type_no", "product_type_name",
    "product_group_name", "graphical_appearance_no", "graphical_appearance_name",
    "colour_group_code", "colour_group_name", "perceived_colour_value_id",
    "perceived_colour_value_name", "perceived_colour_master_id", "perceived_colour_master_name",
    "department_no", "department_name", "index_code", "index_name", "index_group_no",
    "index_group_name", "section_no", "section_name", "garment_group_no", "garment_group_name",
    "detail_desc",
]
CUSTOMER_COLUMNS = ["customer_id", "FN", "Active", "club_member_status", "fashion_news_frequency",
                    "age", "postal_code"]
TRANSACTION_COLUMNS = ["t_dat", "customer_id", "article_id", "price", "sales_channel_id"]

PRICE_DIVISOR = 590  # Kaggle's prices are the real ones divided by this: 9.99 -> 0.016932...


# ---------------------------------------------------------------------------------------------
# Text: prod_name and detail_desc come from templates, so TF-IDF on them carries the type,
# material and pattern.

MODEL_NAMES = (
    "Alma Astrid Bella Billie Cleo Dana Ebba Edith Elin Ella Elsa Emma Freja Frida Greta Hanna "
    "Ida Iris Isa Jade Jane Juno Kaia Kim Lea Leia Lily Linn Lisa Liv Lola Luna Maja Mia Milo "
    "Mira Moa Nala Nora Nova Olga Pia Rita Rosa Saga Sara Siri Sofia Stella Tilda Tove Vera Wilma "
    "Zoe Adam Albin Alex Anton Arvid Axel Ben Carl Dante Eddie Elias Erik Felix Gus Hugo Isak "
    "Jack Jonas Kevin Leo Liam Loke Ludde Malte Max Neo Nils Oscar Otto Rasmus Sam Sixten Ted Theo "
    "Timo Vince Viggo Wille Bamse Berry Bibi Cherry Daisy Dolly Flora Happy Honey Kiwi Lemon Mango "
    "Minnie Peach Pepper Pixie Poppy Sunny Tiger Toffee"
).split()
NAME_SUFFIXES = ["", "", "", "", " (1)", " 2p", " 3p", " HW", " Slim", " Relaxed", " SS", " LS",
                 " Basic", " Premium", " Conscious", " Organic"]
TYPE_NICKNAMES = {
    "Vest top": ["strap top", "tank", "vest", "cami"], "T-shirt": ["tee", "T-shirt", "SS top", "tee EQ"],
    "Top": ["top", "LS top", "crop top", "wrap top"], "Blouse": ["blouse", "wrap blouse", "frill blouse"],
    "Shirt": ["shirt", "oxford shirt", "flannel shirt", "linen shirt"], "Polo shirt": ["polo", "pique polo"],
    "Sweater": ["sweater", "jumper", "knit", "crew"], "Hoodie": ["hoodie", "hood", "zip hood"],
    "Cardigan": ["cardigan", "cardi"], "Bodysuit": ["body", "bodysuit", "body 2p"],
    "Jacket": ["jacket", "puffer", "parka", "bomber", "denim jacket"], "Coat": ["coat", "wool coat", "trench"],
    "Blazer": ["blazer", "jacket slim"], "Dress": ["dress", "maxi dress", "mini dress", "shirt dress"],
    "Jumpsuit/Playsuit": ["jumpsuit", "playsuit"], "Garment Set": ["set", "2-piece set", "body & trs"],
    "Dungarees": ["dungarees", "dungaree"], "Trousers": ["trousers", "TRS", "joggers", "chinos", "jeans"],
    "Shorts": ["shorts", "denim shorts", "sweatshorts"], "Skirt": ["skirt", "midi skirt", "mini skirt"],
    "Leggings/Tights": ["leggings", "tights", "treggings"],
    "Underwear bottom": ["brief", "thong", "hipster", "boxer 3p"],
    "Bra": ["bra", "push up", "T-shirt bra", "bralette"], "Socks": ["socks", "socks 5p", "sneaker socks 3p"],
    "Underwear Tights": ["20 den tights", "50 den tights", "stockings"], "Bikini top": ["bikini top", "triangle top"],
    "Swimwear bottom": ["bikini brief", "swim shorts", "swim tanga"], "Swimsuit": ["swimsuit", "swim body"],
    "Pyjama set": ["pj set", "pyjama"], "Night gown": ["nightdress", "night gown"],
    "Sneakers": ["sneaker", "trainers", "runner"], "Boots": ["boot", "chelsea", "ankle boot"],
    "Sandals": ["sandal", "slider", "flip flop"], "Other shoe": ["ballerina", "loafer", "slipper"],
    "Bag": ["bag", "shopper", "shoulder bag", "backpack"], "Hat/beanie": ["beanie", "hat", "pompom hat"],
    "Cap/peaked": ["cap", "baseball cap"], "Earring": ["earring", "hoops", "earrings 3p"],
    "Necklace": ["necklace", "chain", "pendant"], "Scarf": ["scarf", "shawl", "snood"],
    "Hair/alice band": ["alice band", "hairband"], "Sunglasses": ["sunglasses", "shades"],
    "Belt": ["belt", "waist belt"], "Gloves": ["gloves", "mittens"], "Umbrella": ["umbrella"],
    "Unknown": ["item", "gift box"],
}
TYPE_NOUNS = {  # what the description calls the product
    "Vest top": "top", "T-shirt": "T-shirt", "Top": "top", "Blouse": "blouse", "Shirt": "shirt",
    "Polo shirt": "polo shirt", "Sweater": "jumper", "Hoodie": "hooded top", "Cardigan": "cardigan",
    "Bodysuit": "body", "Jacket": "jacket", "Coat": "coat", "Blazer": "jacket", "Dress": "dress",
    "Jumpsuit/Playsuit": "jumpsuit", "Garment Set": "set", "Dungarees": "dungarees",
    "Trousers": "trousers", "Shorts": "shorts", "Skirt": "skirt", "Leggings/Tights": "leggings",
    "Underwear bottom": "briefs", "Bra": "bra", "Socks": "socks", "Underwear Tights": "tights",
    "Bikini top": "bikini top", "Swimwear bottom": "bikini bottoms", "Swimsuit": "swimsuit",
    "Pyjama set": "pyjamas", "Night gown": "nightdress", "Sneakers": "trainers", "Boots": "boots",
    "Sandals": "sandals", "Other shoe": "ballet pumps", "Bag": "bag", "Hat/beanie": "hat",
    "Cap/peaked": "cap", "Earring": "earrings", "Necklace": "necklace", "Scarf": "scarf",
    "Hair/alice band": "alice band", "Sunglasses": "sunglasses", "Belt": "belt", "Gloves": "gloves",
    "Umbrella": "umbrella", "Unknown": "item",
}
SILHOUETTE_FEATURES = {
    "vest": ["narrow shoulder straps", "a deep scoop neckline", "adjustable spaghetti straps", "a racer back"],
    "tshirt": ["a round neckline and short sleeves", "a V-neck and short sleeves", "dropped shoulders",
               "a rounded hem", "a chest pocket"],
    "top": ["long sleeves", "puff sleeves", "a square neckline", "a cropped cut", "frill trims"],
    "blouse": ["a V-neck and 3/4-length sleeves", "buttons down the front", "a tie at the neck",
               "flounced sleeves", "a smocked waist"],
    "shirt": ["a collar and buttons down the front", "a chest pocket", "long sleeves with buttoned cuffs",
              "a yoke at the back", "a button-down collar"],
    "polo": ["a ribbed collar and button placket", "short sleeves with ribbed trims", "side slits"],
    "sweater": ["long sleeves and ribbing at the cuffs and hem", "dropped shoulders", "a high neck",
                "a round neckline"],
    "hoodie": ["a lined drawstring hood", "a kangaroo pocket", "ribbed cuffs and hem", "a soft brushed inside"],
    "cardigan": ["buttons down the front", "a V-neck", "pockets in the side seams", "ribbed trims"],
    "bodysuit": ["press-studs at the crotch", "envelope shoulders", "short sleeves", "long sleeves"],
    "jacket": ["a zip down the front", "a stand-up collar", "zipped side pockets", "a detachable hood",
               "a padded lining"],
    "coat": ["notch lapels", "a double-breasted front", "welt pockets", "a vent at the back", "a tie belt"],
    "blazer": ["notch lapels", "a single button at the front", "flap front pockets", "shoulder pads"],
    "dress": ["a V-neck", "narrow adjustable shoulder straps", "a seam at the waist", "a flared skirt",
              "short puff sleeves", "a slit at the hem"],
    "jumpsuit": ["a V-neck", "an elasticated waist", "straight, wide legs", "a tie belt"],
    "set": ["a top and trousers", "a body and leggings", "a T-shirt and shorts"],
    "dungarees": ["adjustable straps", "a bib pocket", "press-studs at the sides"],
    "trousers": ["a regular waist", "a high waist", "an elasticated drawstring waist", "tapered legs",
                 "wide legs", "a zip fly and button", "side pockets"],
    "shorts": ["an elasticated waist", "a high waist", "side pockets", "turn-ups at the hems"],
    "skirt": ["a high waist", "a concealed zip at the back", "a flared cut", "pleats", "a slit at the back"],
    "leggings": ["a wide waistband", "a high waist", "flatlock seams"],
    "briefs": ["a low waist", "lined gusset", "high-cut legs", "a lace trim at the waist"],
    "bra": ["underwired, moulded cups", "narrow adjustable shoulder straps", "a hook-and-eye fastening",
            "removable inserts"],
    "socks": ["ribbed tops", "reinforced heels", "an anti-slip coating", "a motif"],
    "tights": ["a wide waist", "a reinforced gusset", "an elasticated waist"],
    "bikini": ["removable padding", "ties at the back", "underwired cups", "triangle cups"],
    "swimsuit": ["a low-cut back", "adjustable straps", "a lined front", "high-cut legs"],
    "pyjama": ["a top with long sleeves", "trousers with an elasticated waist", "piping"],
    "nightgown": ["narrow straps", "lace trims", "short sleeves"],
    "sneaker": ["lacing at the front", "a padded edge", "a rubber sole", "a loop at the back"],
    "boot": ["a zip in one side", "elastic gores in the sides", "a chunky sole", "a block heel"],
    "sandal": ["crossover straps", "an adjustable ankle strap", "a cork sole"],
    "flat": ["a round toe", "an elasticated edge", "a thin sole"],
    "bag": ["a zip at the top", "two handles", "a detachable shoulder strap", "an inner pocket"],
    "beanie": ["a turned-up brim", "a pompom", "a fleece lining"],
    "cap": ["a peak", "an adjustable strap at the back", "an embroidered appliqué"],
    "earrings": ["hoops", "pendants", "a glittering stone"], "necklace": ["a pendant", "a lobster clasp"],
    "scarf": ["fringes at the short sides", "a soft finish"], "hairband": ["a padded top", "a knot detail"],
    "sunglasses": ["UV-protective, tinted lenses", "metal frames"], "belt": ["a metal buckle", "holes"],
    "gloves": ["ribbed cuffs", "touchscreen fingertips"], "umbrella": ["a telescopic handle"],
    "box": ["a gift box"],
}
MATERIALS = {  # garment group -> materials
    1002: ["cotton jersey", "soft jersey", "organic cotton jersey", "ribbed jersey", "slub jersey"],
    1005: ["jersey", "modal-blend jersey", "sweatshirt fabric", "viscose jersey"],
    1003: ["soft knit", "rib-knit cotton", "fine-knit fabric containing some wool", "chunky knit"],
    1006: ["soft organic cotton jersey", "cotton fabric", "soft knit"],
    1007: ["water-repellent padded fabric", "cotton twill", "felted wool-blend fabric", "nylon"],
    1008: ["woven fabric", "stretch twill", "crêpe fabric"],
    1009: ["woven fabric", "cotton twill", "stretch twill", "lyocell"],
    1010: ["airy woven fabric", "viscose weave", "crêpe fabric", "chiffon"],
    1011: ["cotton poplin", "linen", "oxford cotton", "flannel"],
    1012: ["woven fabric", "pleated chiffon", "satin", "jersey"],
    1013: ["airy woven fabric", "viscose jersey", "crêpe fabric", "linen blend", "satin"],
    1014: ["cotton jersey", "woven fabric"],
    1016: ["washed denim", "stretch denim", "cotton denim"],
    1017: ["microfibre", "lace", "soft cotton jersey", "satin"],
    1018: ["woven fabric", "jersey", "tulle"],
    1019: ["faux leather", "metal", "soft knit", "woven straw", "canvas"],
    1020: ["faux leather", "canvas", "suede", "mesh"],
    1021: ["fine-knit fabric", "soft cotton-blend", "nylon"],
    1023: ["swimwear fabric", "recycled swimwear fabric"],
    1025: ["cotton twill", "sweatshirt fabric", "linen blend"],
    1001: ["mixed materials"],
}
SILHOUETTE_MATERIALS = {  # accessories and shoes: materials that suit the item better than its garment group's
    "sunglasses": ["plastic", "metal"], "earrings": ["metal", "metal with glass beads"],
    "necklace": ["metal", "metal with glass beads"], "hairband": ["satin", "metal", "velvet"],
    "bag": ["faux leather", "canvas", "woven straw"], "beanie": ["soft knit", "rib knit", "fleece"],
    "gloves": ["soft knit", "faux leather"], "scarf": ["soft knit", "woven fabric", "chiffon"],
    "belt": ["faux leather", "leather"], "cap": ["cotton twill"], "umbrella": ["polyester"],
}
PATTERN_PHRASES = {
    "solid": [""], "allover": [" with a printed pattern", " in a patterned weave", " with a floral print"],
    "melange": [" in melange jersey", " in a marled finish"], "stripe": [" with stripes", " in a striped pattern"],
    "denim": [" in washed denim"], "frontprint": [" with a printed motif on the front", " with a text print"],
    "placement": [" with a print motif", " with a printed detail"], "check": [" in a checked pattern"],
    "blocking": [" in a colour-block design", " with contrasting panels"], "lace": [" with lace trims", " in lace"],
    "embroidery": [" with embroidered details", " with appliqués"], "dot": [" with a spotted pattern"],
    "mixed": [" with a patterned yoke"], "glitter": [" with glittery threads", " with sequins"],
    "jacquard": [" in a jacquard knit"], "metallic": [" with a metallic sheen"],
    "treatment": [" in a washed finish"], "structure": [" in a textured weave", " in rib knit"],
    "chambray": [" in chambray"],
}
FITS = ["Regular fit.", "Slim fit.", "Relaxed fit.", "Loose fit.", "Oversized.", ""]


# ---------------------------------------------------------------------------------------------
# Calendar

@dataclass(frozen=True)
class Calendar:
    """Days of the history and the weeks they fall in; the last week ends on END."""

    start: date
    n_days: int

    @property
    def offset(self) -> int:  # days missing from the first week, so that the last week is whole
        return (-self.n_days) % 7

    @property
    def n_weeks(self) -> int:
        return (self.n_days + self.offset) // 7

    def week(self, day: np.ndarray) -> np.ndarray:
        return (day + self.offset) // 7

    def week_start_day(self, week: np.ndarray) -> np.ndarray:
        return np.asarray(week) * 7 - self.offset

    def day_of_year(self, day: np.ndarray) -> np.ndarray:
        return (np.asarray(day) + self.start.timetuple().tm_yday - 1) % 365

    def daily_intensity(self) -> np.ndarray:
        """Relative shop traffic per day: summer peak, Black Friday, weekends, the spring-2020 lockdown
        and a shop that stays below its 2019 level after it (the real last weeks have about 70k buyers,
        against about 300k rows in an average week)."""
        day = np.arange(self.n_days)
        doy = self.day_of_year(day)
        weekday = (day + self.start.weekday()) % 7
        level = 1.0 + 0.25 * np.cos(2 * np.pi * (doy - 175) / 365)
        level *= np.where(np.abs(doy - 332) <= 3, 1.6, 1.0)  # Black Friday week
        level *= np.array([0.9, 0.92, 0.95, 1.0, 1.12, 1.15, 0.96])[weekday]
        when = np.datetime64(self.start) + day
        lockdown = (when >= np.datetime64("2020-03-15")) & (when <= np.datetime64("2020-05-10"))
        level *= np.where(lockdown, 0.5, np.where(when > np.datetime64("2020-05-10"), 0.55, 1.0))
        return level


def _calendar(scale: Scale) -> Calendar:
    if scale.weeks >= 105:
        start = FULL_START
    else:
        start = END - timedelta(days=7 * scale.weeks - 1)
    return Calendar(start, (END - start).days + 1)


def _hex_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random 64-character lowercase hex ids as numpy bytes ('S64', a quarter of the memory of str)."""
    digits = rng.integers(0, 16, size=(n, 64), dtype=np.uint8)
    chars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[digits]
    return np.frombuffer(chars.tobytes(), dtype="S64")


def _strings(values: np.ndarray) -> pl.Series:
    return pl.Series(values).cast(pl.String)


def _draw_segments(weights: np.ndarray, start: np.ndarray, length: np.ndarray,
                   u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row draw an index in weights[start:start+length] proportional to the weights.

    One cumulative sum and one searchsorted for all rows. Returns (index, ok) where ok is False
    for rows whose segment has no weight (their index is meaningless).
    """
    cum = np.cumsum(weights, dtype=np.float64)
    last = start + np.maximum(length, 1) - 1
    lo = np.where(start > 0, cum[np.maximum(start - 1, 0)], 0.0)
    hi = cum[last]
    ok = (hi - lo) > 1e-12 * np.maximum(hi, 1e-300)
    idx = np.searchsorted(cum, lo + u * (hi - lo), side="right")
    return np.clip(idx, start, last), ok & (length > 0)


def _draw_rows(weights: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw a column per row of a small (rows x k) weight matrix; ok False where a row sums to 0."""
    cum = np.cumsum(weights, axis=1)
    total = cum[:, -1]
    k = (cum < (u * total)[:, None]).sum(axis=1)
    return np.minimum(k, weights.shape[1] - 1), total > 0


def _lognormal(rng, sigma, n):
    return np.exp(rng.normal(0.0, sigma, n) - sigma * sigma / 2)


# ---------------------------------------------------------------------------------------------
# Catalogue

def make_articles(rng: np.random.Generator, n_articles: int, cal: Calendar, regime: str = "fashion") -> pl.DataFrame:
    """The catalogue: the Kaggle article columns plus hidden '_' columns the simulation uses.

    In the habitual regime most products were on sale before the history starts and they last
    (few launches, slow fading); the colour and description columns are blanked when written.
    """
    n_types, n_idx = len(PRODUCT_TYPES), len(INDEXES)
    type_of = {name: i for i, name in enumerate(TYPE_NAMES)}
    # (index code, type) pair weights from the real proportions
    pair_w = np.zeros((n_idx, n_types))
    for i, (code, *_rest) in enumerate(INDEXES):
        for name, count in INDEX_TYPES[code].items():
            pair_w[i, type_of[name]] = count
    pair_w *= (np.array([ix[4] for ix in INDEXES]) / pair_w.sum(1))[:, None]

    # products: colourways per product is 1 + geometric, mean ~2.2 like the real 105,542 / 47,224
    colourways = np.minimum(rng.geometric(0.45, n_articles), 12)  # more than enough products
    ends = np.cumsum(colourways)
    n_products = int(np.searchsorted(ends, n_articles) + 1)
    colourways = colourways[:n_products]
    colourways[-1] -= ends[n_products - 1] - n_articles

    pair = rng.choice(n_idx * n_types, size=n_products, p=(pair_w / pair_w.sum()).ravel())
    p_index, p_type = pair // n_types, pair % n_types
    silhouette = np.array([t[3] for t in PRODUCT_TYPES])[p_type]

    # graphical appearance, conditioned on what suits the silhouette
    app_w = _appearance_weights()[p_type]
    p_app = _draw_rows(app_w, rng.random(n_products))[0]

    # launches: a quarter of the products were on sale before the history starts; seasonal types
    # launch a few weeks before their peak
    n_weeks = cal.n_weeks
    pre = rng.random(n_products) < REGIMES[regime].pre_launched
    week_grid = np.arange(n_weeks)
    doy_grid = cal.day_of_year(cal.week_start_day(week_grid) + 3)
    peak = np.array([t[6] for t in PRODUCT_TYPES], dtype=float)
    amp = np.array([t[7] for t in PRODUCT_TYPES])
    launch_season = np.exp(amp[:, None] * np.cos(2 * np.pi * (doy_grid[None, :] + 35 - peak[:, None]) / 365))
    launch = _draw_rows(launch_season[p_type], rng.random(n_products))[0]
    launch = np.where(pre, -rng.integers(1, 20, n_products), launch)
    basic = rng.random(n_products) < 0.15
    tau = np.where(basic, 150.0, np.exp(rng.normal(np.log(7.0), 0.5, n_products)))  # weeks
    if regime == "habitual":
        tau = np.full(n_products, 150.0)
    pop = np.exp(rng.normal(0.0, 1.0, n_products) * REGIMES[regime].popularity_sigma)

    # prices: the type's typical price, cheaper for children and Divided, snapped to x.99
    base_price = np.array([t[5] for t in PRODUCT_TYPES])[p_type]
    index_factor = np.array([1.0, 1.0, 1.0, 0.8, 1.05, 0.65, 0.7, 0.8, 0.6, 1.1])[p_index]
    price = np.maximum(np.round(base_price * index_factor * _lognormal(rng, 0.3, n_products)) - 0.01, 2.99)
    price = np.where(price > 20, np.round(price / 5) * 5 - 0.01, price)

    # product codes grow with the launch date, like the real ones (old basics have low codes)
    order = np.argsort(launch + rng.normal(0, 6, n_products) - basic * 60, kind="stable")
    gaps = rng.integers(1, 2 * max(1, 800_000 // n_products), n_products)
    codes_sorted = 108_775 + np.cumsum(gaps) - gaps[0]
    product_code = np.empty(n_products, dtype=np.int64)
    product_code[order] = codes_sorted

    # articles
    prod = np.repeat(np.arange(n_products), colourways)
    first = np.r_[0, np.cumsum(colourways)[:-1]]
    pos = np.arange(n_articles) - first[prod]
    step = np.where(rng.random(n_articles) < 0.12, rng.integers(5, 30, n_articles), rng.integers(1, 3, n_articles))
    step[pos == 0] = rng.integers(1, 3, n_products)
    variant = np.cumsum(step)
    variant -= np.repeat(variant[first] - step[first], colourways)
    article_id = product_code[prod] * 1000 + np.minimum(variant, 999)

    colour = _pick_colours(rng, p_index, p_type, p_app, colourways)
    a_launch = launch[prod] + np.where((pos > 0) & (rng.random(n_articles) < 0.25),
                                       rng.integers(2, 30, n_articles), 0)
    a_app = p_app[prod]
    switch = (pos > 0) & (rng.random(n_articles) < 0.08)  # a striped colourway of a solid product
    a_app = np.where(switch & (a_app == 0), 3, a_app)
    colour_w = np.array([c[5] for c in COLOURS], dtype=float)
    a_pop = pop[prod] * _lognormal(rng, 0.4, n_articles) * (colour_w[colour] / colour_w.mean()) ** 0.2

    value = np.array([c[3] for c in COLOURS])[colour]
    shift = rng.random(n_articles)
    value = np.where((shift < 0.08) & (value > 0), np.array([2, 1, 7, 2, 7, 6, 2])[np.clip(value - 1, 0, 6)], value)
    master = np.array([c[4] for c in COLOURS])[colour]
    master = np.where((master == 19) & (shift > 0.9), 10, master)  # some greens read bluish
    master = np.where((master == 11) & (shift > 0.93), 15, master)  # and some beiges mole

    section_no, section_name = _sections(rng, p_index, p_type)
    garment = _garment_groups(rng, p_index, p_type, p_app)
    names, descs = _texts(rng, p_type, p_app, garment, silhouette)
    colour_in_desc = (rng.random(n_products) < 0.15)[prod] & (descs[prod] != "")
    colour_names = np.array([c[1] for c in COLOURS])[colour]
    detail = np.where(colour_in_desc, np.char.add(np.char.add(descs[prod], " In "),
                                                   np.char.add(np.char.lower(colour_names), ".")), descs[prod])

    ix = np.array(INDEXES, dtype=object)
    df = pl.DataFrame({
        "article_id": article_id,
        "product_code": product_code[prod],
        "prod_name": names[prod],
        "product_type_no": np.array([t[1] for t in PRODUCT_TYPES])[p_type][prod],
        "product_type_name": np.array(TYPE_NAMES)[p_type][prod],
        "product_group_name": np.array([t[2] for t in PRODUCT_TYPES])[p_type][prod],
        "graphical_appearance_no": np.array([a[0] for a in APPEARANCES])[a_app],
        "graphical_appearance_name": np.array([a[1] for a in APPEARANCES])[a_app],
        "colour_group_code": np.array([c[0] for c in COLOURS])[colour],
        "colour_group_name": colour_names,
        "perceived_colour_value_id": value,
        "perceived_colour_value_name": _lookup(PERCEIVED_VALUES, value),
        "perceived_colour_master_id": master,
        "perceived_colour_master_name": _lookup(PERCEIVED_MASTERS, master),
        "index_code": ix[p_index, 0].astype(str)[prod],
        "index_name": ix[p_index, 1].astype(str)[prod],
        "index_group_no": ix[p_index, 2].astype(np.int64)[prod],
        "index_group_name": ix[p_index, 3].astype(str)[prod],
        "section_no": section_no[prod],
        "section_name": section_name[prod],
        "garment_group_no": garment[prod],
        "garment_group_name": _lookup(GARMENT_GROUPS, garment)[prod],
        "detail_desc": detail,
        # hidden simulation columns
        "_product": prod, "_index": p_index[prod], "_type": p_type[prod], "_colour": colour,
        "_appearance": a_app, "_launch": a_launch, "_tau": tau[prod], "_pop": a_pop,
        "_price": price[prod], "_silhouette": silhouette[prod], "_master": master + 1,
    })
    df = _departments(df).sort("article_id")
    # number products in id order, so that the colourways of one product are neighbours
    return df.with_columns(_product=(pl.col("product_code").rank("dense") - 1).cast(pl.Int64))


def _appearance_weights() -> np.ndarray:
    """(types x appearances) weights: the real shares, adjusted for what suits each silhouette."""
    base = np.array([a[2] for a in APPEARANCES], dtype=float)
    draw = [a[3] for a in APPEARANCES]
    w = np.tile(base, (len(PRODUCT_TYPES), 1))
    for t, row in enumerate(PRODUCT_TYPES):
        sil = row[3]
        for j, kind in enumerate(draw):
            m = 1.0
            if kind == "denim":
                m = {"trousers": 5, "shorts": 5, "skirt": 3, "dungarees": 5, "jacket": 1.5, "shirt": 1.5,
                     "dress": 0.3, "set": 0.3}.get(sil, 0.0)
            elif kind in ("frontprint", "placement"):
                m = {"tshirt": 3, "sweater": 2, "hoodie": 3, "bodysuit": 3, "vest": 1.5, "top": 1.5,
                     "set": 2, "pyjama": 2, "dress": 0.5, "bag": 0.5}.get(sil, 0.05)
            elif kind == "lace":
                m = {"bra": 6, "briefs": 3, "top": 2, "blouse": 2, "dress": 2, "nightgown": 4}.get(sil, 0.05)
            elif kind in ("metallic", "glitter"):
                m = {"earrings": 12, "necklace": 12, "hairband": 4, "bag": 1.5, "flat": 1.5, "top": 1.5,
                     "dress": 1.5}.get(sil, 0.2)
            elif kind == "melange":
                m = {"tshirt": 1.5, "sweater": 2, "hoodie": 2, "trousers": 1, "socks": 1.5, "beanie": 2,
                     "leggings": 1}.get(sil, 0.2)
            elif kind == "check":
                m = {"shirt": 3, "blouse": 2, "skirt": 2, "trousers": 1.5, "jacket": 1.5, "coat": 2,
                     "scarf": 4, "pyjama": 2}.get(sil, 0.3)
            if sil in ("earrings", "necklace", "sunglasses", "belt", "umbrella", "box") and kind not in (
                    "solid", "metallic", "glitter"):
                m *= 0.05
            if sil in ("sneaker", "boot", "sandal", "flat") and kind not in ("solid", "metallic", "glitter"):
                m *= 0.15
            w[t, j] *= m
    return w


def _pick_colours(rng, p_index, p_type, p_app, colourways) -> np.ndarray:
    """Distinct colour groups for the colourways of each product (Gumbel top-k per product)."""
    n_products = len(p_index)
    w = np.tile(np.array([c[5] for c in COLOURS], dtype=float), (n_products, 1))
    names = [c[1] for c in COLOURS]
    col = {n: i for i, n in enumerate(names)}
    sil = np.array([t[3] for t in PRODUCT_TYPES])[p_type]
    draw = np.array([a[3] for a in APPEARANCES])[p_app]
    pinks = [col[n] for n in names if "Pink" in n or "Purple" in n]
    jewel = np.isin(sil, ["earrings", "necklace", "hairband"])
    w[jewel] *= 0.3
    w[np.ix_(jewel, [col["Gold"], col["Silver"], col["Bronze/Copper"]])] *= 60
    baby = p_index == 5
    w[np.ix_(baby, [col[n] for n in ("Light Pink", "Light Blue", "Off White", "White", "Light Grey",
                                       "Light Beige", "Light Yellow")])] *= 2.5
    w[np.ix_(baby, [col["Black"]])] *= 0.15
    men = p_index == 4
    w[np.ix_(men, pinks)] *= 0.1
    w[np.ix_(men, [col["Dark Blue"], col["Black"], col["Greenish Khaki"], col["Grey"]])] *= 1.5
    shoes = np.isin(sil, ["sneaker", "boot", "sandal", "flat"])
    w[np.ix_(shoes, [col["Black"], col["White"], col["Beige"], col["Light Beige"]])] *= 2
    denim = draw == "denim"
    keep = [col[n] for n in ("Blue", "Dark Blue", "Light Blue", "Black", "Grey", "Dark Grey", "White")]
    mask = np.zeros(len(COLOURS), bool)
    mask[keep] = True
    w[denim] = np.where(mask, w[denim], 0.0)
    w[np.ix_(denim, [col["Light Blue"], col["Blue"]])] *= 4
    key = np.log(w + 1e-300) + rng.gumbel(size=w.shape)
    ranked = np.argsort(-key, axis=1)
    k = colourways.max()
    ranked = ranked[:, :k]
    take = np.arange(k)[None, :] < colourways[:, None]
    return ranked[take]


def _lookup(table: dict, keys: np.ndarray) -> np.ndarray:
    """Names for an array of codes, vectorised."""
    codes = np.array(list(table))
    names = np.array(list(table.values()))
    order = np.argsort(codes)
    return names[order[np.searchsorted(codes[order], keys)]]


def _sections(rng, p_index, p_type):
    """A matching specific section 80% of the time, else one of the index's general sections."""
    n = len(p_index)
    no = np.zeros(n, dtype=np.int64)
    name = np.empty(n, dtype=object)
    u, pick = rng.random(n), rng.random(n)
    for i, (code, *_rest) in enumerate(INDEXES):
        rows = SECTIONS[code]
        general = [r for r in rows if r[2] is None] or rows
        for t, tname in enumerate(TYPE_NAMES):
            m = np.flatnonzero((p_index == i) & (p_type == t))
            if len(m) == 0:
                continue
            specific = [r for r in rows if r[2] is not None and tname in r[2]]
            for row_i in m:
                options = specific if specific and u[row_i] < 0.8 else general
                no[row_i], name[row_i] = options[int(pick[row_i] * len(options))][:2]
    return no, name.astype(str)


def _garment_groups(rng, p_index, p_type, p_app):
    g = np.array([t[4] for t in PRODUCT_TYPES])[p_type]
    group = np.array([t[2] for t in PRODUCT_TYPES])[p_type]
    sil = np.array([t[3] for t in PRODUCT_TYPES])[p_type]
    garment = np.isin(group, ["Garment Upper body", "Garment Lower body", "Garment Full body"])
    draw = np.array([a[3] for a in APPEARANCES])[p_app]
    g = np.where(np.isin(sil, ["trousers", "shorts", "skirt"]) & (draw == "denim"), 1016, g)
    g = np.where((p_index == 5) & garment, 1006, g)  # baby
    g = np.where(np.isin(p_index, [6, 7]) & np.isin(sil, ["dress", "skirt"]), 1018, g)  # girls
    g = np.where(np.isin(sil, ["sweater", "cardigan"]) & (rng.random(len(g)) < 0.15), 1005, g)
    return np.where(garment & (rng.random(len(g)) < 0.02), 1014, g)


def _departments(df: pl.DataFrame) -> pl.DataFrame:
    """One department per (index code, section, garment group); numbers and names like H&M's."""
    keys = df.select("index_code", "section_no", "garment_group_no").unique().sort(
        "section_no", "garment_group_no", "index_code")
    n = keys.height
    keys = keys.with_columns(
        department_no=(1201 + (pl.int_range(n, dtype=pl.Int64) * 7919) % 8700).cast(pl.Int64),
        department_name=pl.col("index_code").replace_strict(DEPARTMENT_PREFIX, return_dtype=pl.String)
        + pl.col("garment_group_no").replace_strict(DEPARTMENT_WORDS, return_dtype=pl.String),
    )
    return df.join(keys, on=["index_code", "section_no", "garment_group_no"], how="left",
                   maintain_order="left")


def _texts(rng, p_type, p_app, garment, silhouette):
    """prod_name and detail_desc per product (a loop over products, not over transactions)."""
    n = len(p_type)
    names = np.empty(n, dtype=object)
    descs = np.empty(n, dtype=object)
    u = rng.random((n, 8))
    draws = [a[3] for a in APPEARANCES]
    for i in range(n):
        tname = TYPE_NAMES[p_type[i]]
        nick = TYPE_NICKNAMES[tname][int(u[i, 0] * len(TYPE_NICKNAMES[tname]))]
        model = MODEL_NAMES[int(u[i, 1] * len(MODEL_NAMES))]
        suffix = NAME_SUFFIXES[int(u[i, 2] * len(NAME_SUFFIXES))]
        name = f"{model} {nick}{suffix}" if u[i, 3] < 0.85 else f"{nick[0].upper()}{nick[1:]}{suffix}"
        names[i] = name
        if u[i, 4] < 0.01:
            descs[i] = ""
            continue
        feats = SILHOUETTE_FEATURES[silhouette[i]]
        f1 = feats[int(u[i, 5] * len(feats))]
        f2 = feats[int(u[i, 6] * len(feats))]
        feat = f1 if f1 == f2 else f"{f1} and {f2}"
        mats = SILHOUETTE_MATERIALS.get(silhouette[i], MATERIALS[int(garment[i])])
        mat = mats[int(u[i, 7] * len(mats))]
        kind = draws[p_app[i]]
        phrase = PATTERN_PHRASES.get(kind, [""])[int(u[i, 3] * len(PATTERN_PHRASES.get(kind, [""])))]
        noun = TYPE_NOUNS[tname]
        fit = FITS[int(u[i, 2] * len(FITS))] if PRODUCT_TYPES[p_type[i]][2].startswith("Garment") else ""
        text = f"{noun[0].upper()}{noun[1:]} in {mat}{phrase} with {feat}."
        descs[i] = f"{text} {fit}".strip()
    if n >= 50 and u[:, 4].min() >= 0.01:  # the real file has empty descriptions: keep one at least
        descs[int(np.argmin(u[:, 4]))] = ""
    return names.astype(str), descs.astype(str)


# ---------------------------------------------------------------------------------------------
# Customers

SEGMENTS = {  # index-code mix of each kind of customer (A B C D F G H I J S)
    "ladies": [0.50, 0.14, 0.10, 0.10, 0.03, 0.02, 0.03, 0.02, 0.01, 0.05],
    "young": [0.22, 0.06, 0.08, 0.52, 0.05, 0.005, 0.005, 0.02, 0.005, 0.05],
    "parent": [0.18, 0.04, 0.03, 0.03, 0.03, 0.22, 0.22, 0.13, 0.10, 0.02],
    "men": [0.03, 0.01, 0.02, 0.10, 0.72, 0.01, 0.02, 0.02, 0.01, 0.06],
    "mixed": [ix[4] / 105_542 for ix in INDEXES],
}
N_FAVOURITE_PAIRS = 4
N_FAVOURITE_COLOURS = 3


def make_customers(rng: np.random.Generator, n: int, articles: pl.DataFrame, cal: Calendar):
    """customers.csv columns (sorted by customer_id like Kaggle's) and their latent tastes."""
    ids = _strings(np.sort(_hex_ids(rng, n)))  # sorted, like Kaggle's file
    while ids.str.slice(48).n_unique() < n:  # the UInt64 keys (last 16 digits) must be unique
        ids = _strings(np.sort(_hex_ids(rng, n)))

    # age: bimodal, peaks in the twenties and around fifty, mean ~36
    mode = rng.random(n)
    age = np.where(mode < 0.55, rng.normal(25, 4.5, n),
                   np.where(mode < 0.95, rng.normal(50, 7, n), rng.uniform(16, 90, n)))
    age = np.clip(np.round(age), 16, 99).astype(np.int64)
    fn = rng.random(n) < 0.35
    active = np.where(fn, rng.random(n) < 0.97, rng.random(n) < 0.01)
    club = rng.choice(["ACTIVE", "PRE-CREATE", "LEFT CLUB", ""], n, p=[0.92745, 0.06776, 0.00034, 0.00445])
    news = np.where(fn, "Regularly", "NONE").astype(object)
    u = rng.random(n)
    news[u < 0.0117] = ""
    news[(u >= 0.0117) & (u < 0.0123)] = "Monthly"
    news[rng.choice(n, size=min(2, n), replace=False)] = "None"  # the odd value of the real file
    n_postal = max(2, int(n * 0.257))
    postal_hex = _hex_ids(rng, n_postal)
    postal = np.where(rng.random(n) < 0.088, 0, 1 + (rng.random(n) ** 1.6 * (n_postal - 1)).astype(np.int64))
    frame = pl.DataFrame({
        "customer_id": ids,
        "FN": np.where(fn, "1.0", ""),
        "Active": np.where(active, "1.0", ""),
        "club_member_status": club,
        "fashion_news_frequency": news.astype(str),
        "age": np.where(rng.random(n) < 0.0116, -1, age),
        "postal_code": _strings(postal_hex[np.minimum(postal, n_postal - 1)]),
    }).with_columns(
        *(pl.col(c).replace("", None) for c in ("FN", "Active", "club_member_status", "fashion_news_frequency")),
        age=pl.when(pl.col("age") >= 0).then(pl.col("age")),
    ).select(CUSTOMER_COLUMNS)

    # latent tastes
    seg_names = list(SEGMENTS)
    seg_p = np.where((age < 25)[:, None], [0.30, 0.55, 0.0, 0.12, 0.03],
                     np.where((age < 41)[:, None], [0.45, 0.10, 0.25, 0.15, 0.05], [0.50, 0.0, 0.20, 0.18, 0.12]))
    segment = _draw_rows(seg_p, rng.random(n))[0]
    profile = np.array([SEGMENTS[s] for s in seg_names])[segment]
    mix = rng.gamma(profile * 10 + 0.01)
    mix /= mix.sum(1, keepdims=True)

    # favourite (index code, type) pairs: an index from the mix, then a type as common as it is
    # in that index of the catalogue
    n_types = len(PRODUCT_TYPES)
    counts = np.zeros(len(INDEXES) * n_types)
    np.add.at(counts, articles["_index"].to_numpy() * n_types + articles["_type"].to_numpy(), 1)
    counts = counts ** 0.8
    fav_pairs = np.zeros((n, N_FAVOURITE_PAIRS), dtype=np.int64)
    for k in range(N_FAVOURITE_PAIRS):
        idx = _draw_rows(mix, rng.random(n))[0]
        pick, ok = _draw_segments(counts, idx * n_types, np.full(n, n_types), rng.random(n))
        fav_pairs[:, k] = np.where(ok, pick, idx * n_types + TYPE_NAMES.index("T-shirt"))
    fav_pair_w = rng.gamma(np.ones((n, N_FAVOURITE_PAIRS)))
    fav_pair_w /= fav_pair_w.sum(1, keepdims=True)
    # favourite colours (perceived colour masters), as common as they are in the catalogue
    masters = articles["_master"].to_numpy()
    master_counts = np.bincount(masters, minlength=N_MASTERS).astype(float) ** 0.9
    fav_masters = rng.choice(N_MASTERS, size=(n, N_FAVOURITE_COLOURS), p=master_counts / master_counts.sum())

    # activity: long-tailed visits per year; a join date; churners stop after a while
    activity = np.exp(rng.normal(0.0, 1.1, n))
    existing = rng.random(n) < 0.65
    join = np.where(existing, 0, rng.integers(0, cal.n_days, n))
    churn = rng.random(n) < 0.45
    stop = np.where(churn, join + rng.exponential(300, n).astype(np.int64), cal.n_days - 1)
    stop = np.minimum(stop, cal.n_days - 1)
    tastes = {
        "mix": mix, "fav_pairs": fav_pairs, "fav_pair_w": fav_pair_w, "fav_masters": fav_masters,
        "loyalty": rng.beta(2, 2.5, n),
        "price_level": rng.normal(0.0, 0.3, n) + 0.004 * (age - 36),
        "pattern_taste": rng.choice([-1.0, 0.0, 1.0], n, p=[0.45, 0.35, 0.20]),
        "online": rng.beta(1.4, 0.6, n), "activity": activity,
        # frequent shoppers are also the ones who come back for the same article
        "repeat": rng.beta(0.3, 0.3 / REPEAT_RATE, n) * activity ** 0.3 / np.mean(activity ** 0.3),
        "join": join, "stop": stop, "never": rng.random(n) < 0.007,
    }
    return frame, tastes


# ---------------------------------------------------------------------------------------------
# Transactions

# The knobs of the purchase model. They were tuned on the demo scale so that, as on the real data,
# last week's best sellers are a weak baseline, repurchases and tastes each beat it about 2-3x, and
# only a blend of them reaches 3x and more (see the module docstring and the report in the issue).
# FEATURED_* and REPEAT_RATE were then set at the full scale, where the real scores are known:
# last-week popularity about 0.007, repurchase filled with popular items about 0.022.
COPY_TYPE = 0.3  # share of basket lines that take the (index, type) of the basket's first line
SIBLING_IN_BASKET = 0.3  # of those, share that take another colourway of that line's product
CANDIDATES = 4  # articles of a pair a customer weighs against each other
COLOUR_TASTE = 1.3  # how much a customer prefers their favourite colours
PRICE_TASTE = 2.5  # and articles near their price level
PATTERN_TASTE = 0.8  # and solid or patterned ones
SAME_PRODUCT_PENALTY = 2.5  # and other products than the ones they just bought
RECENT_MEMORY = 24  # articles per customer remembered, to avoid buying the same one by chance
REPEAT_RATE = 0.018  # mean chance that a line is bought again later (twice that for basics)
REPEAT_GAP_DAYS = 8.0  # mean days until that repeat purchase
REPEAT_SAME = 0.9  # a repeat purchase is the same article; otherwise another colourway
DUPLICATE = 0.06  # share of lines bought in several units (exact duplicate rows)
LAUNCH_BOOST = 1.0  # new articles sell (1 + this) times their later rate in the launch week
POPULARITY_POWER = 0.85  # articles are drawn by popularity to this power
FEATURED_SHARE = 0.03  # share of the lines that buy one of the shop's featured articles
FEATURED_NEW = 6  # new articles featured each week, whatever the catalogue's size
FEATURED_WEEKS = 4  # weeks an article stays featured
BASIC_TYPES = ("Socks", "Underwear bottom", "Underwear Tights", "Leggings/Tights", "Vest top", "T-shirt",
               "Bra", "Bodysuit")


# The habitual regime: each customer has a repertoire of slots (needs: "my shampoo", "the kids'
# socks"), each with a fixed liking; a slot holds the article the customer settled on for it.
HABIT_MEAN = 0.6  # mean share of a customer's lines that go to their repertoire (the rest: browsing, one-offs)
REPERTOIRE_SLOTS = 100  # median slots per customer (log-normal, between MIN_SLOTS and MAX_SLOTS)
MIN_SLOTS, MAX_SLOTS = 30, 200
SLOT_LIKING_SHAPE = 4.0  # gamma shape of the slot likings: some needs come back more often than others
STAY = 0.92  # a slot line buys the held article again; otherwise the customer tries another of its type
SWITCH = 0.3  # and keeps the one they tried instead from then on
REFILL_WEEKS = 4.0  # mean weeks a purchase for a slot lasts at home before the need comes back in full


def weekly_popularity(rng: np.random.Generator, articles: pl.DataFrame, cal: Calendar) -> np.ndarray:
    """(weeks x articles) popularity: launch, decay, seasonality, weekly noise; 0 before launch."""
    weeks = np.arange(cal.n_weeks)[:, None]
    age = weeks - articles["_launch"].to_numpy()[None, :]
    tau = articles["_tau"].to_numpy()[None, :]
    fresh = np.maximum(age, 0)
    life = np.where(age >= 0, np.exp(-fresh / tau) * (1 + LAUNCH_BOOST * np.exp(-fresh / 0.8)), 0.0)
    t = articles["_type"].to_numpy()
    peak = np.array([x[6] for x in PRODUCT_TYPES], dtype=float)[t][None, :]
    amp = np.array([x[7] for x in PRODUCT_TYPES])[t][None, :]
    doy = cal.day_of_year(cal.week_start_day(weeks) + 3)
    season = np.exp(amp * np.cos(2 * np.pi * (doy - peak) / 365))
    noise = np.exp(rng.normal(0, 0.3, life.shape))
    return (articles["_pop"].to_numpy()[None, :] * life * season * noise).astype(np.float64)


def make_transactions(rng: np.random.Generator, articles: pl.DataFrame, tastes: dict, cal: Calendar,
                      target_rows: int, show_progress: bool = True, regime: str = "fashion") -> dict[str, np.ndarray]:
    """Rows of transactions_train as arrays (day, customer index, article index, price, channel).

    Visits, baskets, repeats, units and prices are common to both regimes; what each basket line buys
    is the regime's: fashion picks by taste among what sells now, habitual mostly buys the same again.
    """
    n_c = len(tastes["join"])
    n_types = len(PRODUCT_TYPES)
    n_pairs = len(INDEXES) * n_types
    a_product = articles["_product"].to_numpy()
    a_price = articles["_price"].to_numpy()
    a_launch = articles["_launch"].to_numpy()
    a_type = articles["_type"].to_numpy()
    a_master = articles["_master"].to_numpy()
    a_index = articles["_index"].to_numpy()
    a_rel_price = np.log(a_price / np.array([t[5] for t in PRODUCT_TYPES])[a_type])
    a_patterned = ~np.isin(articles["graphical_appearance_name"].to_numpy(), ["Solid", "Melange", "Unknown"])
    basic = np.isin(np.array(TYPE_NAMES)[a_type], BASIC_TYPES)
    assert np.all(np.diff(a_product) >= 0), "articles must be sorted by product"
    prod_first = np.searchsorted(a_product, a_product, side="left")
    prod_size = np.bincount(a_product)[a_product]

    def sibling(art, u):
        """Another colourway of the same product (the colourways of a product are neighbours)."""
        size = prod_size[art]
        other = prod_first[art] + (art - prod_first[art] + 1 + (u * np.maximum(size - 1, 1)).astype(np.int64)) % size
        return np.where(size > 1, other, art)

    # articles sorted by (index code, type) pair, to draw within a pair by popularity
    pair = articles["_index"].to_numpy() * n_types + a_type
    order = np.argsort(pair, kind="stable")
    pair_start = np.searchsorted(pair[order], np.arange(n_pairs))
    pair_len = np.bincount(pair, minlength=n_pairs)
    # customers weigh popularity less than linearly: even in a small catalogue no single article
    # takes over a whole (index, type) pair
    pop = weekly_popularity(rng, articles, cal) ** POPULARITY_POWER
    pair_mass = np.stack([np.bincount(pair, weights=pop[w], minlength=n_pairs) for w in range(cal.n_weeks)])
    # how much of a pair is on sale this week, against an average pair: favourites follow it
    pair_share = pair_mass / np.maximum(pair_mass.sum(1, keepdims=True), 1e-12) * (pair_mass > 0).sum(1, keepdims=True)

    # visits: Poisson in the customer's active window, dates by daily traffic
    window = tastes["stop"] - tastes["join"] + 1
    expected_visits = tastes["activity"] * window / 365
    basket_extra = REGIMES[regime].basket_mean_extra
    rows_per_visit = (1 + basket_extra) * (1 + 1.3 * tastes["repeat"].mean()) * (1 + DUPLICATE * 1.6)
    if REGIMES[regime].buyers < 1.0:  # the rows go to the customers who buy
        expected_visits = np.where(tastes["never"], 0.0, expected_visits)
    expected_visits *= target_rows / rows_per_visit / expected_visits.sum()
    n_visits = np.where(tastes["never"], 0, np.maximum(rng.poisson(expected_visits), 1))
    v_cust = np.repeat(np.arange(n_c, dtype=np.int32), n_visits)
    cum_traffic = np.r_[0.0, np.cumsum(cal.daily_intensity())]
    lo, hi = cum_traffic[tastes["join"][v_cust]], cum_traffic[tastes["stop"][v_cust] + 1]
    v_day = (np.searchsorted(cum_traffic, lo + rng.random(len(v_cust)) * (hi - lo), side="right") - 1).astype(np.int32)
    del lo, hi
    v_order = np.lexsort((v_cust, v_day))
    v_cust, v_day = v_cust[v_order], v_day[v_order]
    v_channel = np.where(rng.random(len(v_cust)) < tastes["online"][v_cust], 2, 1).astype(np.int8)
    basket = 1 + rng.poisson(np.exp(rng.normal(np.log(basket_extra) - 0.18, 0.6, len(v_cust))))

    line_visit = np.repeat(np.arange(len(v_cust), dtype=np.int32), basket)
    line_first = np.repeat((np.cumsum(basket) - basket).astype(np.int32), basket)
    line_cust = v_cust[line_visit]
    line_day = v_day[line_visit]
    line_art = np.empty(len(line_visit), dtype=np.int32)
    week_bounds = np.searchsorted(cal.week(line_day), np.arange(cal.n_weeks + 1))
    if regime == "habitual":
        line_art[:] = _habitual_lines(rng, tastes, line_cust, week_bounds, pop, pair, pair_mass, pair_share,
                                      order, pair_start, pair_len, show_progress)
    else:
        # what each customer bought lately: people rarely pick the very same article again by chance
        # (repeat purchases are added on purpose below, at the real rates)
        recent = np.full((n_c, RECENT_MEMORY), -1, dtype=np.int32)
        featured, featured_until = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        recent_ptr = np.zeros(n_c, dtype=np.int64)

        for w in tqdm(range(cal.n_weeks), desc="transactions", unit="week", disable=not show_progress):
            s, e = week_bounds[w], week_bounds[w + 1]
            if s == e:
                continue
            c, m = line_cust[s:e], e - s
            # (index, type): a favourite pair or the assortment of an index from the customer's mix;
            # a favourite with little on sale this week is used less (demand follows supply)
            fav_w = tastes["fav_pair_w"][c] * pair_share[w][tastes["fav_pairs"][c]]
            k, ok_fav = _draw_rows(fav_w, rng.random(m))
            fav_supply = fav_w.sum(1)
            use_fav = ok_fav & (rng.random(m) < tastes["loyalty"][c] * fav_supply / (fav_supply + 0.5))
            idx = _draw_rows(tastes["mix"][c], rng.random(m))[0]
            bg_pair, ok_bg = _draw_segments(pair_mass[w], idx * n_types, np.full(m, n_types), rng.random(m))
            any_pair = _draw_segments(pair_mass[w], np.zeros(m, np.int64), np.full(m, n_pairs), rng.random(m))[0]
            p = np.where(use_fav, tastes["fav_pairs"][c, k], np.where(ok_bg, bg_pair, any_pair))
            # some lines of a basket take the pair of the basket's first line (two tops, ...)
            pos = np.arange(s, e) - line_first[s:e]
            copy = (pos > 0) & (rng.random(m) < COPY_TYPE)
            leader = np.maximum.accumulate(np.where(copy, 0, np.arange(m)))
            p = p[leader]
            # candidates of the pair by current popularity; the one that best suits the customer's
            # colours, price level and pattern taste (with noise), and that they did not just buy
            best, best_score = np.zeros(m, dtype=np.int64), np.full(m, -np.inf)
            best_is_recent = np.zeros(m, dtype=bool)
            weights = pop[w][order]
            mine = recent[c]
            mine_products = np.where(mine >= 0, a_product[mine], -1)
            for _ in range(CANDIDATES):
                art = order[_draw_segments(weights, pair_start[p], pair_len[p], rng.random(m))[0]]
                is_recent = (mine == art[:, None]).any(1)
                score = (COLOUR_TASTE * (tastes["fav_masters"][c] == a_master[art][:, None]).any(1)
                         - PRICE_TASTE * np.abs(a_rel_price[art] - tastes["price_level"][c])
                         + PATTERN_TASTE * tastes["pattern_taste"][c] * np.where(a_patterned[art], 1.0, -1.0)
                         - SAME_PRODUCT_PENALTY * (mine_products == a_product[art][:, None]).any(1)
                         - 100.0 * is_recent + rng.gumbel(size=m))
                better = score > best_score
                best, best_score = np.where(better, art, best), np.where(better, score, best_score)
                best_is_recent = np.where(better, is_recent, best_is_recent)
            # another colourway of the first line's product: the same top in two colours
            sib = sibling(best[leader], rng.random(m))
            take_sib = copy & (rng.random(m) < SIBLING_IN_BASKET) & (pop[w][sib] > 0)
            # nothing new for them in that pair this week: the customer leaves the line out
            art = np.where(take_sib, sib, np.where(best_is_recent, -1, best))
            # the shop features a few new articles for some weeks (campaigns, the window, the home page),
            # however large its catalogue: a share of the lines goes to them, by the customer's index mix
            featured, featured_until = _feature(rng, featured, featured_until, w, pop[w], a_launch)
            if len(featured):
                f_w = tastes["mix"][c][:, a_index[featured]] * pop[w][featured][None, :]
                f_art = featured[_draw_rows(f_w, rng.random(m))[0]]
                take_f = (rng.random(m) < FEATURED_SHARE) & ~(mine == f_art[:, None]).any(1)
                art = np.where(take_f, f_art, art)
            line_art[s:e] = art
            # remember this week's purchases (a ring buffer per customer)
            by_c = np.argsort(c, kind="stable")
            cs = c[by_c]
            rank = np.arange(m) - np.searchsorted(cs, cs, side="left")
            recent[cs, (recent_ptr[cs] + rank) % RECENT_MEMORY] = art[by_c]
            np.add.at(recent_ptr, c, 1)

    # one row per article and customer-week; repeats and several units are added on purpose below
    first = np.zeros(len(line_art), dtype=bool)
    key = (cal.week(line_day).astype(np.int64) * n_c + line_cust) * len(a_price) + line_art
    first[np.unique(key, return_index=True)[1]] = True
    first &= line_art >= 0
    del key, line_first
    line_visit, line_cust, line_day, line_art = (x[first] for x in (line_visit, line_cust, line_day, line_art))

    # repeat purchases: the same article (or another colourway) again some days later
    p_rep = tastes["repeat"][line_cust] * np.where(basic[line_art], 2.0, 1.0)
    rep = np.flatnonzero(rng.random(len(line_art)) < p_rep)
    r_day = line_day[rep] + 1 + np.minimum(rng.geometric(1 / REPEAT_GAP_DAYS, len(rep)) - 1, 60)
    r_art = line_art[rep]
    sib = sibling(r_art, rng.random(len(rep)))
    r_art = np.where((rng.random(len(rep)) > REPEAT_SAME) & (a_launch[sib] <= cal.week(r_day)), sib, r_art)
    keep = r_day < cal.n_days
    r_day, r_art, r_cust = r_day[keep], r_art[keep], line_cust[rep[keep]]
    r_channel = np.where(rng.random(len(r_cust)) < tastes["online"][r_cust], 2, 1).astype(np.int8)

    day = np.r_[line_day, r_day]
    cust = np.r_[line_cust, r_cust]
    art = np.r_[line_art, r_art]
    channel = np.r_[v_channel[line_visit], r_channel]
    # several units of an article in one basket: exact duplicate rows
    units = 1 + np.where(rng.random(len(art)) < DUPLICATE * np.where(basic[art], 2.0, 0.8),
                         rng.geometric(0.6, len(art)), 0)
    price = _line_prices(rng, a_price[art], cal.week(day) - a_launch[art])
    keys = np.lexsort((cust, day))  # Kaggle's file is sorted by date, then customer
    keys = np.repeat(keys, units[keys])
    return {"day": day[keys], "customer": cust[keys], "article": art[keys], "price": price[keys],
            "channel": channel[keys], "repeat_rows": len(r_day)}


def _feature(rng, featured, until, week, pop_week, launch):
    """The week's featured articles: last week's that still run, plus FEATURED_NEW launches of the last
    two weeks (by popularity), each featured for FEATURED_WEEKS weeks."""
    keep = until > week
    featured, until = featured[keep], until[keep]
    fresh = np.flatnonzero((pop_week > 0) & (week - launch >= 0) & (week - launch <= 2))
    fresh = np.setdiff1d(fresh, featured)
    if len(fresh):
        new = rng.choice(fresh, size=min(FEATURED_NEW, len(fresh)), replace=False,
                         p=pop_week[fresh] / pop_week[fresh].sum())
        featured, until = np.r_[featured, new], np.r_[until, np.full(len(new), week + FEATURED_WEEKS)]
    return featured, until


def _habitual_lines(rng, tastes, line_cust, week_bounds, pop, pair, pair_mass, pair_share, order, pair_start,
                    pair_len, show_progress) -> np.ndarray:
    """The article of every basket line in the habitual regime (lines sorted by week).

    A line either browses (an (index, type) pair from the customer's favourites or mix, an article
    by popularity: a one-off) or serves a repertoire slot picked by liking. An empty slot is filled
    with what the customer tries; a filled one is bought again, or now and then the customer tries
    another article of the same type and may switch to it.
    """
    n_c = len(tastes["join"])
    n_types = len(PRODUCT_TYPES)
    n_pairs = pair_mass.shape[1]
    habit = rng.beta(4 * HABIT_MEAN, 4 * (1 - HABIT_MEAN), n_c)
    n_slots = np.clip(np.exp(rng.normal(np.log(REPERTOIRE_SLOTS), 0.6, n_c)), MIN_SLOTS, MAX_SLOTS).astype(np.int64)
    # float32: at the full scale these are 1.37M x MAX_SLOTS
    liking = (rng.gamma(SLOT_LIKING_SHAPE, size=(n_c, MAX_SLOTS)) * (np.arange(MAX_SLOTS)[None, :] < n_slots[:, None])
              ).astype(np.float32)
    held = np.full((n_c, MAX_SLOTS), -1, dtype=np.int32)
    refill = rng.gamma(2.0, REFILL_WEEKS / 2, (n_c, MAX_SLOTS)).astype(np.float32)
    served = np.full((n_c, MAX_SLOTS), -1e6, dtype=np.float32)  # week a slot was last bought for
    out = np.empty(len(line_cust), dtype=np.int32)
    for w in tqdm(range(len(week_bounds) - 1), desc="transactions", unit="week", disable=not show_progress):
        s, e = week_bounds[w], week_bounds[w + 1]
        if s == e:
            continue
        c, m = line_cust[s:e], e - s
        # a need just met weighs less until its stock runs out
        slot = _draw_rows(liking[c] * np.clip((w - served[c]) / refill[c], 0.05, 1.0), rng.random(m))[0]
        current = held[c, slot]
        on_sale = (current >= 0) & (pop[w][np.maximum(current, 0)] > 0)
        serves_slot = rng.random(m) < habit[c]
        again = serves_slot & on_sale & (rng.random(m) < STAY)
        # what the customer tries: for a filled slot another article of the held one's type, for an
        # empty one a favourite (index, type) pair as much as it is on sale; browsing, a pair of their mix
        fav_w = tastes["fav_pair_w"][c] * pair_share[w][tastes["fav_pairs"][c]]
        k, ok_fav = _draw_rows(fav_w, rng.random(m))
        idx = _draw_rows(tastes["mix"][c], rng.random(m))[0]
        bg_pair, ok_bg = _draw_segments(pair_mass[w], idx * n_types, np.full(m, n_types), rng.random(m))
        any_pair = _draw_segments(pair_mass[w], np.zeros(m, np.int64), np.full(m, n_pairs), rng.random(m))[0]
        browse = np.where(ok_bg, bg_pair, any_pair)
        p = np.where(serves_slot, np.where(current >= 0, pair[np.maximum(current, 0)],
                                           np.where(ok_fav, tastes["fav_pairs"][c, k], browse)), browse)
        tried, ok = _draw_segments(pop[w][order], pair_start[p], pair_len[p], rng.random(m))
        tried = order[tried]
        # a slot whose type has nothing on sale this week: the customer browses instead
        tried = np.where(ok, tried, order[_draw_segments(pop[w][order], pair_start[any_pair], pair_len[any_pair],
                                                         rng.random(m))[0]])
        out[s:e] = np.where(again, current, tried)
        take = serves_slot & ~again & ((current < 0) | ~on_sale | (rng.random(m) < SWITCH))
        held[c[take], slot[take]] = tried[take]
        served[c[serves_slot], slot[serves_slot]] = w
    return out


def _line_prices(rng, base: np.ndarray, age_weeks: np.ndarray) -> np.ndarray:
    """Kaggle-style price of each line: the base price, marked down as the article ages, / 590."""
    p_sale = 0.05 + 0.45 / (1 + np.exp(-(age_weeks - 12) / 3))
    factor = np.where(rng.random(len(base)) < p_sale, rng.choice([0.7, 0.6, 0.5, 0.4], len(base)), 1.0)
    cents = np.round(base * factor, 1) - np.where(factor < 1, 0.01, 0.0)
    cents = np.where(factor < 1, np.maximum(cents, 0.99), base)
    # a little noise in the last digits, as the real file mixes currencies and campaigns
    cents = np.where(rng.random(len(base)) < 0.15, np.round(cents * rng.uniform(0.9, 1.0, len(base)), 2), cents)
    return np.round(cents, 2) / PRICE_DIVISOR


# ---------------------------------------------------------------------------------------------
# Writing

def _check_targets(art: artifacts_mod.Artifacts, force: bool) -> None:
    existing = [p for p in (art.raw_articles, art.raw_customers, art.raw_transactions) if Path(p).exists()]
    if existing and not force:
        raise UserError(f"{existing[0]} already exists and sample_data.py never overwrites raw data: "
                        "use --force to replace it (or another --data-dir)")


def _write_csv(df: pl.DataFrame, path: Path) -> int:
    with atomic_path(path) as tmp:
        df.write_csv(tmp)
    return Path(path).stat().st_size


def _write_transactions(rows: dict, articles: pl.DataFrame, customer_ids: pl.Series, cal: Calendar,
                        path: Path, show_progress: bool, chunk: int = 2_000_000) -> int:
    """Write transactions_train.csv in chunks (the full scale does not fit as strings in memory)."""
    art_text = articles["article_id"].cast(pl.String).str.zfill(10)
    n = len(rows["day"])
    start = np.datetime64(cal.start, "D").astype(np.int64)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        bar = tqdm(total=n, desc="write transactions", unit="row", unit_scale=True, disable=not show_progress)
        for lo in range(0, max(n, 1), chunk):
            hi = min(lo + chunk, n)
            df = pl.DataFrame({
                "t_dat": pl.Series(rows["day"][lo:hi] + start, dtype=pl.Int32).cast(pl.Date),
                "customer_id": customer_ids.gather(rows["customer"][lo:hi]),
                "article_id": art_text.gather(rows["article"][lo:hi]),
                "price": rows["price"][lo:hi],
                "sales_channel_id": pl.Series(rows["channel"][lo:hi], dtype=pl.Int8),
            }).select(TRANSACTION_COLUMNS)
            df.write_csv(fh, include_header=lo == 0)
            bar.update(hi - lo)
        bar.close()
    return Path(path).stat().st_size


def articles_csv_frame(articles: pl.DataFrame) -> pl.DataFrame:
    """The catalogue as Kaggle writes it: ids zero-padded, colour codes two digits."""
    return articles.select(ARTICLE_COLUMNS).with_columns(
        article_id_text(pl.col("article_id")),
        pl.col("product_code").cast(pl.String).str.zfill(7),
        pl.when(pl.col("colour_group_code") >= 0)
        .then(pl.col("colour_group_code").cast(pl.String).str.zfill(2))
        .otherwise(pl.col("colour_group_code").cast(pl.String)),
        pl.col("detail_desc").replace("", None),
    )


def without_colours_and_descriptions(articles: pl.DataFrame) -> pl.DataFrame:
    """The catalogue as a retailer without that information converts it: Kaggle's unknown values."""
    return articles.with_columns(
        *(pl.lit(-1, dtype=articles[c].dtype).alias(c)
          for c in ("colour_group_code", "perceived_colour_value_id", "perceived_colour_master_id")),
        *(pl.lit("Unknown").alias(c)
          for c in ("colour_group_name", "perceived_colour_value_name", "perceived_colour_master_name")),
        detail_desc=pl.lit(""),
    )


def generate(artifacts: artifacts_mod.Artifacts, scale: str = "demo", seed: int = 42, force: bool = False,
             images: bool | None = None, show_progress: bool = True, image_size: tuple[int, int] | None = None,
             workers: int | None = None, regime: str = "fashion") -> dict:
    """Write the three raw Kaggle CSVs (and images) for a scale and regime; returns a summary dict.

    images=None draws them where the scale and the regime have them by default (not at full scale,
    not in the habitual regime).
    """
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}: use one of {', '.join(SCALES)}")
    if regime not in REGIMES:
        raise UserError(f"unknown regime {regime!r}: use one of {', '.join(REGIMES)}")
    if not isinstance(seed, int) or seed < 0:
        raise UserError(f"--seed {seed}: give a whole number of 0 or more (numpy seeds are non-negative)")
    if images is None:
        images = SCALES[scale].images and REGIMES[regime].images
    clock = time.perf_counter()
    sc = SCALES[scale]
    art = artifacts
    _check_targets(art, force)
    cal = _calendar(sc)
    # one generator per part, so the parts do not shift each other when one changes
    rng_art, rng_cust, rng_tx = (np.random.default_rng([seed, k]) for k in range(3))

    articles = make_articles(rng_art, sc.articles, cal, regime)
    n_images = 0
    if images:  # first, so that a clash with existing images stops the run before the long part
        n_images = sample_images.write_images(art, articles, image_size or sc.image_size, seed, force,
                                              show_progress, workers)
    customers, tastes = make_customers(rng_cust, sc.customers, articles, cal)
    if REGIMES[regime].buyers < 1.0:  # (only then: the fashion regime's draws stay as they were)
        tastes["never"] |= rng_cust.random(customers.height) >= REGIMES[regime].buyers
    rows = make_transactions(rng_tx, articles, tastes, cal, sc.transactions, show_progress, regime)
    public = articles if REGIMES[regime].colours_and_descriptions else without_colours_and_descriptions(articles)
    sizes = {
        "articles": _write_csv(articles_csv_frame(public), art.raw_articles),
        "customers": _write_csv(customers, art.raw_customers),
    }
    # transactions last: its presence means the set is complete (the Makefile checks it)
    sizes["transactions"] = _write_transactions(rows, articles, customers["customer_id"], cal,
                                                art.raw_transactions, show_progress)
    result = {
        "scale": scale, "regime": regime, "seed": seed, "articles": articles.height, "customers": customers.height,
        "transactions": len(rows["day"]), "images": n_images,
        "first_day": str(cal.start), "last_day": str(END),
        "bytes": sizes, "seconds": round(time.perf_counter() - clock, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
        "raw_dir": str(art.raw_dir),
    }
    result["summary"] = summary("sample_data", scale=scale, regime=regime, articles=result["articles"],
                                customers=result["customers"], transactions=result["transactions"],
                                images=n_images, seconds=result["seconds"], peak_rss_mb=result["peak_rss_mb"],
                                output=str(art.raw_dir))
    return result


def main() -> None:
    """Command line: parse the arguments and generate."""
    parser = argparse.ArgumentParser(description="\n\n".join(__doc__.split("\n\n")[:3]),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    artifacts_mod.add_dir_args(parser, images=True)
    parser.add_argument("--scale", choices=list(SCALES), default="demo",
                        help="tiny (tests, seconds), demo (default), full (the real row counts)")
    parser.add_argument("--regime", choices=list(REGIMES), default="fashion",
                        help="fashion (default): launches every week, tastes, some repeats; habitual: the same "
                             "shoppers buy the same articles again over months, few launches, no colours, "
                             "descriptions or images (unless --images)")
    parser.add_argument("--full", action="store_true", help="shortcut for --scale full (no images unless --images)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite existing raw files and images")
    parser.add_argument("--no-images", action="store_true", help="write the CSVs only")
    parser.add_argument("--images", action="store_true", help="draw images at the full scale too")
    parser.add_argument("--image-size", default=None, metavar="WxH",
                        help="image size in pixels, portrait 2:3 (default 384x576; 128x192 at tiny)")
    parser.add_argument("--workers", type=int, default=None, help="processes drawing images (default: up to 4)")
    add_progress_flag(parser)
    args = parser.parse_args()
    scale = "full" if args.full else args.scale
    images = not args.no_images and ((SCALES[scale].images and REGIMES[args.regime].images) or args.images)
    size = None
    if args.image_size:
        try:
            w, h = (int(x) for x in args.image_size.lower().split("x"))
        except ValueError:
            raise UserError(f"--image-size {args.image_size!r}: give WIDTHxHEIGHT, e.g. 384x576") from None
        if w < 32 or h < 32:
            raise UserError("--image-size: at least 32x32 pixels")
        size = (w, h)
    generate(artifacts_mod.from_args(args), scale=scale, seed=args.seed, force=args.force, images=images,
             image_size=size, workers=args.workers, regime=args.regime, show_progress=not args.no_progress)


if __name__ == "__main__":
    run_main(main)
