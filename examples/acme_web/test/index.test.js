// Tests for index.js; run with `node --test` (node >= 20, nothing to install).
import { test } from "node:test";
import assert from "node:assert/strict";

import { articleUrl, formatPrice } from "../index.js";

test("formatPrice formats cents as dollars", () => {
  assert.equal(formatPrice(1999), "$19.99");
  assert.equal(formatPrice(0), "$0.00");
});

test("formatPrice rejects fractional cents", () => {
  assert.throws(() => formatPrice(1.5), TypeError);
});

test("articleUrl builds list and item URLs", () => {
  assert.equal(articleUrl("http://localhost:8000/"), "http://localhost:8000/articles");
  assert.equal(
    articleUrl("http://localhost:8000", "hello world"),
    "http://localhost:8000/articles/hello%20world",
  );
});
