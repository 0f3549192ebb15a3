// Browser-side helpers for the Acme articles site (no dependencies).

/**
 * Format an amount in cents as a price string, e.g. formatPrice(1999) -> "$19.99".
 * @param {number} cents integer number of cents
 * @param {string} [currency="USD"] ISO 4217 currency code
 * @returns {string}
 */
export function formatPrice(cents, currency = "USD") {
  if (!Number.isInteger(cents)) {
    throw new TypeError(`formatPrice expects integer cents, got ${cents}`);
  }
  return new Intl.NumberFormat("en-US", { style: "currency", currency }).format(cents / 100);
}

/**
 * Build the acme-api URL for an article list or a single article.
 * @param {string} base e.g. "http://127.0.0.1:8000"
 * @param {string} [slug] article slug; omit for the list
 * @returns {string}
 */
export function articleUrl(base, slug) {
  const root = base.replace(/\/+$/, "");
  return slug ? `${root}/articles/${encodeURIComponent(slug)}` : `${root}/articles`;
}
