//! The limits on what a ruleset may ask for, each named with its unit: an
//! analyst writes rules, so every size, count, depth and window they control
//! is bounded before it is compiled, and every error says which limit.

/// The most rules any ruleset may hold, whatever the configured limit.
pub const RULES_MAX_HARD: usize = 128;

/// Limits on what a ruleset may ask for. Each is named with its unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of rules source.
    pub source_bytes_max: usize,
    /// Rules in one ruleset (at most [`RULES_MAX_HARD`]: decisions carry
    /// their matched rules as a 128-bit set).
    pub rules_max: usize,
    /// Nesting levels of a condition (parentheses, sets, `not`, function calls).
    pub expr_depth_max: usize,
    /// Constants in one `[...]` set.
    pub set_items_max: usize,
    /// Declared lists.
    pub lists_max: usize,
    /// Values in one list (files and `list_add` together).
    pub list_items_max: usize,
    /// Days of the longest window.
    pub window_max_days: u32,
    /// Distinct history series (equal queries share one).
    pub series_max: usize,
    /// Events kept per entity in one windowed series; older ones are dropped
    /// first (counts saturate at this number).
    pub series_items_max: usize,
    /// Values kept per entity in one `ever` set; the oldest is forgotten first,
    /// which errs toward holding (a forgotten device looks new).
    pub ever_items_max: usize,
    /// Characters in a name.
    pub name_chars_max: usize,
    /// Characters in a description.
    pub description_chars_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            source_bytes_max: 1 << 20,
            rules_max: RULES_MAX_HARD,
            expr_depth_max: 32,
            set_items_max: 64,
            lists_max: 64,
            list_items_max: 1_000_000,
            window_max_days: 400,
            series_max: 256,
            series_items_max: 1024,
            ever_items_max: 64,
            name_chars_max: 64,
            description_chars_max: 1024,
        }
    }
}

impl Limits {
    pub fn window_max_nanos(&self) -> i128 {
        i128::from(self.window_max_days) * 86_400 * 1_000_000_000
    }
}
