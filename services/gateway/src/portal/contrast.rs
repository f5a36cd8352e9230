//! Checks the stylesheet's colours against WCAG 2.1 contrast (4.5:1 for text, 3:1
//! for the focus outline), so a colour change that makes the portal hard to read
//! fails the build's tests rather than a user.

/// The colour of `--name` in the stylesheet's `:root`, as RGB.
fn var(css: &str, name: &str) -> [u8; 3] {
    let key = format!("--{name}:");
    let at = css
        .find(&key)
        .unwrap_or_else(|| panic!("portal.css defines {key}"));
    let value: String = css[at + key.len()..]
        .trim_start()
        .chars()
        .take_while(|c| *c == '#' || c.is_ascii_hexdigit())
        .collect();
    hex(&value)
}

fn hex(text: &str) -> [u8; 3] {
    let t = text.trim_start_matches('#');
    let full = if t.len() == 3 {
        t.chars().flat_map(|c| [c, c]).collect::<String>()
    } else {
        t[..6].to_owned()
    };
    let byte = |i: usize| u8::from_str_radix(&full[i..i + 2], 16).expect("a hex colour");
    [byte(0), byte(2), byte(4)]
}

/// Relative luminance (WCAG 2.1).
fn luminance(c: [u8; 3]) -> f64 {
    let channel = |v: u8| {
        let s = f64::from(v) / 255.0;
        if s <= 0.039_28 {
            s / 12.92
        } else {
            ((s + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(c[0]) + 0.7152 * channel(c[1]) + 0.0722 * channel(c[2])
}

fn ratio(a: [u8; 3], b: [u8; 3]) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    let (hi, lo) = if la > lb { (la, lb) } else { (lb, la) };
    (hi + 0.05) / (lo + 0.05)
}

/// Every text colour on every background it is drawn on reaches 4.5:1; the focus
/// outline reaches 3:1 against the page. The literal backgrounds must still be in
/// the stylesheet, so this test follows a change of them.
#[test]
fn the_stylesheets_colours_have_enough_contrast() {
    let css = include_str!("../../assets/portal.css");
    let v = |n: &str| var(css, n);
    let white = hex("#fff");
    for literal in ["#f0f7f1", "#fbeff1", "#f6f8fa", "#fff8c5"] {
        assert!(css.contains(literal), "portal.css no longer uses {literal}");
    }
    let text_pairs = [
        ("text", v("fg"), v("bg")),
        ("muted text, hints", v("muted"), v("bg")),
        ("links", v("accent"), v("bg")),
        ("ok badge", v("ok"), v("bg")),
        ("failed badge, field errors", v("bad"), v("bg")),
        ("warning badge", v("warn"), v("bg")),
        ("button label", white, v("accent")),
        ("sign-out button", v("accent"), white),
        ("notice", v("fg"), hex("#f0f7f1")),
        ("error box", v("fg"), hex("#fbeff1")),
        ("field error in an error box", v("bad"), hex("#fbeff1")),
        ("code block", v("fg"), hex("#f6f8fa")),
        ("secret", v("fg"), hex("#fff8c5")),
        (
            "muted text in a table on a notice",
            v("muted"),
            hex("#f0f7f1"),
        ),
    ];
    for (what, fg, bg) in text_pairs {
        let r = ratio(fg, bg);
        assert!(r >= 4.5, "{what}: contrast {r:.2} is below 4.5:1");
    }
    let outline = ratio(v("accent"), v("bg"));
    assert!(outline >= 3.0, "focus outline: {outline:.2} below 3:1");
}

/// The formula gives the known extremes.
#[test]
fn contrast_ratio_of_black_on_white_is_21() {
    let r = ratio(hex("#000"), hex("#fff"));
    assert!((r - 21.0).abs() < 0.01, "{r}");
    assert!((ratio(hex("#777777"), hex("#fff")) - 4.48).abs() < 0.01);
}
