//! The spend cap (`max_cost_usd`): before each model request, the worst case of that request
//! (its prompt estimated from its length, its reply at `max_completion_tokens`) added to what
//! the run has spent must stay within the cap, so a run never passes it. Pure arithmetic over
//! the price table.

use crate::llm::{self, Price, Usage};

/// Prompt tokens assumed per image (a low-detail image costs 85; a detailed one up to ~1,100).
const IMAGE_TOKENS: f64 = 1_500.0;

/// Characters per prompt token assumed (real tokenisers give 3.5 to 4.5 on JSON and page text:
/// erring high keeps the cap).
const CHARS_PER_TOKEN: f64 = 3.0;

/// The smallest of the caps that are set.
pub fn smallest(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Why a cap cannot be kept for `model` (no price), if so.
pub fn unenforceable(cap: Option<f64>, model: &str, price: Option<Price>) -> Option<String> {
    let cap = cap?;
    price.is_none().then(|| {
        format!(
            "max_cost_usd ${cap} cannot be enforced: the model {model:?} has no price in llm_prices (SMOOTHD_LLM_PRICES)"
        )
    })
}

/// The most a request of `request_chars` characters (JSON, images left out) with `images`
/// images can cost, its reply included.
pub fn worst_case(price: Price, request_chars: usize, images: usize, max_completion_tokens: u32) -> f64 {
    let prompt = request_chars as f64 / CHARS_PER_TOKEN + images as f64 * IMAGE_TOKENS;
    prompt * price.input / 1e6 + f64::from(max_completion_tokens) * price.output / 1e6
}

/// `Err` (the run's final error) when the next request could take `spent` past `cap`.
pub fn check(
    cap: Option<f64>,
    model: &str,
    price: Option<Price>,
    spent: Usage,
    request_chars: usize,
    images: usize,
    max_completion_tokens: u32,
) -> Result<(), String> {
    let Some(cap) = cap else { return Ok(()) };
    if let Some(why) = unenforceable(Some(cap), model, price) {
        return Err(why);
    }
    let price = price.unwrap_or_default();
    let spent = llm::usd(spent, Some(price)).unwrap_or(0.0);
    let next = worst_case(price, request_chars, images, max_completion_tokens);
    if spent + next > cap {
        return Err(format!(
            "budget reached: spent ${spent:.6} of max_cost_usd ${cap} (the next model request could cost up to ${next:.6})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Price = Price {
        input: 1.0,
        output: 10.0,
    };

    fn used(prompt: u64, completion: u64) -> Usage {
        Usage { prompt, completion }
    }

    #[test]
    fn the_smallest_cap_wins() {
        assert_eq!(smallest(Some(2.0), Some(0.5)), Some(0.5));
        assert_eq!(smallest(None, Some(0.5)), Some(0.5));
        assert_eq!(smallest(Some(2.0), None), Some(2.0));
        assert_eq!(smallest(None, None), None);
    }

    #[test]
    fn a_request_that_could_pass_the_cap_is_not_sent() {
        // 3,000 characters ≈ 1,000 tokens at $1/M = $0.001; 100 reply tokens at $10/M = $0.001.
        assert!((worst_case(P, 3_000, 0, 100) - 0.002).abs() < 1e-12);
        assert!(check(Some(0.002), "m", Some(P), used(0, 0), 3_000, 0, 100).is_ok());
        let e = check(Some(0.002), "m", Some(P), used(1, 0), 3_000, 0, 100).unwrap_err();
        assert!(
            e.starts_with("budget reached: spent $0.000001 of max_cost_usd $0.002"),
            "{e}"
        );
        // An image counts as many prompt tokens.
        assert!(check(Some(0.002), "m", Some(P), used(0, 0), 3_000, 1, 100).is_err());
        assert!(check(None, "m", None, used(10_000_000, 0), 3_000, 1, 100).is_ok());
    }

    #[test]
    fn a_cap_without_a_price_is_refused_not_ignored() {
        let e = check(Some(1.0), "free-model", None, used(0, 0), 10, 0, 10).unwrap_err();
        assert!(
            e.contains("cannot be enforced") && e.contains("\"free-model\""),
            "{e}"
        );
        assert_eq!(unenforceable(None, "m", None), None);
    }
}
