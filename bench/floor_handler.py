"""The floor: a bare FastAPI + Mangum handler answering POST /score with a constant.

What any FastAPI-on-Lambda /score costs before it does anything of its own. The constant has
the shape and size of a real quote, so both sides pay the same response serialisation; the
route takes no body, so the floor parses nothing.
"""

from fastapi import FastAPI
from mangum import Mangum

QUOTE = {
    "price": 131.0,
    "price_grid": [float(p) for p in range(96, 197)],
    "conf_band": {"lower": 124.0, "upper": 139.0},
    "expected": {"occ_now": 0.8, "occ_end_bucket": 0.92, "conversion_prob": 0.412345, "revenue": 54.02},
    "reasons": ["Priced by the property's conversion model (bench-v1): expected revenue is highest here"],
    "safety": {
        "pricing_method": "ml_elasticity",
        "ab_variant": None,
        "experiment_id": None,
        "model_version": "bench-v1",
        "quote_id": "q-0123456789abcdef0123456789abcdef",
        "competitor_data": {"p10": 90.0, "p50": 120.0, "p90": 150.0, "source": "request"},
        "clamped": False,
    },
}

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.post("/score")
def score() -> dict:
    return QUOTE


handler = Mangum(app, lifespan="off")
