//! Limits in the admin API's JSON form, as the routers read them from request bodies and
//! the SQL stores from their `rate_limits` column.

use std::time::Duration;

use crate::{RateLimit, RateLimits};

/// The shape of a limit in the admin API's form, as error messages say it.
macro_rules! limit_shape {
    () => {
        "{\"requests\": 1 or more, \"window_seconds\": 1 to 86400} or {\"requests\": 1 or more, \"period\": \"day\" or \"month\"}, with an optional \"scope\": \"key\" or \"account\""
    };
}

/// What a limit in the admin API's form must be.
pub(crate) const LIMIT_FORM: &str = concat!("must be ", limit_shape!());

impl RateLimit {
    /// A limit in the admin API's form (see its `Serialize`): whole numbers, at least one
    /// request, a window of 1 to 86 400 seconds; nothing else in the object.
    pub(crate) fn from_json(value: &serde_json::Value) -> Option<Self> {
        let object = value.as_object()?;
        let requests = u32::try_from(object.get("requests")?.as_u64()?)
            .ok()
            .filter(|&n| n >= 1)?;
        let limit = match (object.get("window_seconds"), object.get("period")) {
            (Some(window), None) => {
                let window = window.as_u64().filter(|w| (1..=86_400).contains(w))?;
                Self::new(requests, Duration::from_secs(window))
            }
            (None, Some(period)) => match period.as_str()? {
                "day" => Self::per_day(requests),
                "month" => Self::per_month(requests),
                _ => return None,
            },
            _ => return None,
        };
        let limit = match object.get("scope").map(serde_json::Value::as_str) {
            None | Some(Some("key")) => limit,
            Some(Some("account")) => limit.per_account(),
            Some(_) => return None,
        };
        (object.len() == 2 + usize::from(object.contains_key("scope"))).then_some(limit)
    }
}

impl RateLimits {
    /// A list in the admin API's form: an array of [`RateLimit::from_json`]'s.
    pub(crate) fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        let items = value.as_array().ok_or(concat!(
            "must be an array of 1 to 4 limits, each ",
            limit_shape!()
        ))?;
        let limits = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                RateLimit::from_json(item).ok_or_else(|| format!("limit {}: {LIMIT_FORM}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(limits).map_err(|error| error.to_string())
    }

    /// The list as storage keeps it: its JSON text.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn to_json(self) -> String {
        serde_json::to_string(&self).expect("limits serialize")
    }
}
