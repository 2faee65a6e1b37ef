//! [`KeyManager`]: every rule of management, once, over any storage.

use std::{fmt, sync::Arc, time::Duration};

use time::OffsetDateTime;

use super::{
    Account, Actor, AuditAction, AuditEntry, AuditPage, Exposure, FieldError, Granularity, KeyInfo,
    KeyPage, KeyUsage, LimitInfo, NewKey, QuotaUse, UsageBucket,
};
use crate::{
    key::random_id,
    limit::Scope,
    network::{Networks, MAX_KEY_NETWORKS},
    AccountId, ApiKey, BackendError, Environment, Expiration, KeyId, KeyStorage, Permission,
    PermissionSet, Permissions, Plan, Profile, RateLimit, RateLimits, StoredKey, Usage,
};

/// What a new key should be: a name, permissions, an expiration, and optionally an
/// environment and a limit of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeySpec {
    /// 1 to 100 characters once trimmed.
    pub name: String,
    /// At least one.
    pub permissions: Permissions,
    /// Default `90d`.
    pub expiration: Expiration,
    /// The environment the key is for (default none).
    pub environment: Option<Environment>,
    /// Limits for this key instead of its plan's.
    pub rate_limits: Option<RateLimits>,
    /// The networks it may be used from (at most 16); `None` (the default) for anywhere.
    pub allowed_networks: Option<Networks>,
}

impl KeySpec {
    /// A key named `name` with `permissions`, expiring in 90 days, at the default limit.
    pub fn new(name: impl Into<String>, permissions: impl IntoIterator<Item = Permission>) -> Self {
        Self {
            name: name.into(),
            permissions: permissions.into_iter().collect(),
            expiration: Expiration::default(),
            environment: None,
            allowed_networks: None,
            rate_limits: None,
        }
    }

    /// Sets the expiration.
    #[must_use]
    pub fn expiration(mut self, expiration: Expiration) -> Self {
        self.expiration = expiration;
        self
    }

    /// Sets the environment the key is for.
    #[must_use]
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environment = Some(environment);
        self
    }

    /// Holds the key to `limits` (one [`RateLimit`] or a [`RateLimits`] list) instead of its
    /// plan's.
    #[must_use]
    pub fn rate_limits(mut self, limits: impl Into<RateLimits>) -> Self {
        self.rate_limits = Some(limits.into());
        self
    }

    /// The trimmed name and the expiration instant at `now`, or every field error at once.
    /// Lets the key be used only from `networks` (at most 16).
    #[must_use]
    pub fn allowed_networks(mut self, networks: Networks) -> Self {
        self.allowed_networks = Some(networks);
        self
    }

    fn validate(
        &self,
        set: &'static PermissionSet,
        now: OffsetDateTime,
    ) -> Result<(String, Option<OffsetDateTime>), Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = valid_name(&self.name).map_err(|e| errors.push(e)).ok();
        if self.permissions.is_empty() {
            errors.push(FieldError::new(
                "permissions",
                "at least one permission is required",
            ));
        }
        for foreign in self
            .permissions
            .iter()
            .filter(|&p| set.parse(p.as_str()) != Ok(p))
        {
            errors.push(FieldError::new(
                "permissions",
                format!("'{foreign}' is not a permission of this application"),
            ));
        }
        let expires_at = self
            .expiration
            .expires_at(now)
            .map_err(|e| errors.push(FieldError::new("expiration", e.to_string())))
            .ok();
        if let Some(reason) = self
            .rate_limits
            .iter()
            .flat_map(RateLimits::iter)
            .find_map(|limit| valid_limit(limit).err())
        {
            errors.push(FieldError::new("rate_limits", reason));
        }
        if self
            .allowed_networks
            .as_ref()
            .is_some_and(|networks| networks.len() > MAX_KEY_NETWORKS)
        {
            errors.push(FieldError::new(
                "allowed_networks",
                format!("at most {MAX_KEY_NETWORKS} networks"),
            ));
        }
        match name.zip(expires_at) {
            Some(valid) if errors.is_empty() => Ok(valid),
            _ => Err(errors),
        }
    }
}

/// Trims `name` and checks that 1 to 100 characters remain, none of them a control
/// character or a bidirectional control (which would make a name display as another, on
/// the page and in the audit log), and not all of them invisible (account and key names
/// alike).
fn valid_name(name: &str) -> Result<String, FieldError> {
    let invisible = |c: char| {
        c.is_whitespace() || matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
    };
    let bidirectional = |c: char| matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if name.chars().any(char::is_control) {
        return Err(FieldError::new("name", "must not hold control characters"));
    }
    if name.chars().any(bidirectional) {
        return Err(FieldError::new(
            "name",
            "must not hold bidirectional control characters",
        ));
    }
    let trimmed = name.trim();
    if trimmed.chars().all(invisible) {
        return Err(FieldError::new("name", "must not be empty"));
    }
    match trimmed.chars().count() {
        1..=100 => Ok(trimmed.to_owned()),
        _ => Err(FieldError::new("name", "must be at most 100 characters")),
    }
}

/// The longest window a key's own limit may have: a day.
const MAX_LIMIT_WINDOW: Duration = Duration::from_secs(86_400);

/// A limit of a key's own: at least one request; a window of a whole number of seconds,
/// 1 to 86 400.
fn valid_limit(limit: RateLimit) -> Result<(), &'static str> {
    if limit.requests() == 0 {
        return Err("requests must be at least 1");
    }
    match limit.window() {
        Some(window)
            if window < Duration::from_secs(1)
                || window > MAX_LIMIT_WINDOW
                || window.subsec_nanos() != 0 =>
        {
            Err("window_seconds must be a whole number from 1 to 86400")
        }
        _ => Ok(()),
    }
}

/// How a key is rotated: how long the old key keeps working, and the replacement's
/// expiration. A `Duration` is a rotation with that grace.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Rotation {
    /// How long the old key keeps working (zero: it stops now; at most a year).
    pub grace: Duration,
    /// The replacement's expiration. `None` (the default): the old key's option again,
    /// counted from now; a custom date becomes the same length of life as the old key had
    /// (its date less its creation, in whole seconds) from now.
    pub expiration: Option<Expiration>,
    /// The replacement's permissions, a non-empty subset of the old key's: a rotation
    /// narrows a key to what it uses. `None` (the default): the old key's.
    pub permissions: Option<Permissions>,
    /// The replacement's networks: `None` (the default) the old key's, `Some(None)` from
    /// anywhere, `Some(Some(list))` only from `list`.
    #[allow(clippy::option_option)] // kept, cleared, or set: three cases, as JSON has them
    pub allowed_networks: Option<Option<Networks>>,
}

impl Rotation {
    /// A rotation with `grace`, the replacement expiring by the old key's option.
    #[must_use]
    pub fn grace(grace: Duration) -> Self {
        Self {
            grace,
            expiration: None,
            permissions: None,
            allowed_networks: None,
        }
    }

    /// The replacement expires by `expiration` instead.
    #[must_use]
    pub fn expiration(mut self, expiration: Expiration) -> Self {
        self.expiration = Some(expiration);
        self
    }

    /// The replacement may be used only from `networks` (`None`: from anywhere), instead of
    /// the old key's networks.
    #[must_use]
    pub fn allowed_networks(mut self, networks: Option<Networks>) -> Self {
        self.allowed_networks = Some(networks);
        self
    }

    /// The replacement has only `permissions`, a non-empty subset of the old key's.
    #[must_use]
    pub fn permissions(mut self, permissions: impl IntoIterator<Item = Permission>) -> Self {
        self.permissions = Some(permissions.into_iter().collect());
        self
    }
}

impl From<Duration> for Rotation {
    fn from(grace: Duration) -> Self {
        Self::grace(grace)
    }
}

/// The most entries in a page of the audit log or of keys.
pub(crate) const MAX_PAGE: usize = 500;

/// The longest rotation grace: a year.
const MAX_GRACE: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Why a management call failed. Nothing is half-made on any of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManageError {
    /// No such account, or no such key in that account (404).
    #[error("not found")]
    NotFound,
    /// Invalid input (422), every field error at once.
    #[error("invalid request: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<FieldError>),
    /// The account's plan has no API keys (402); `required` lists the plans that have.
    #[error("the account's plan, {plan}, has no API keys")]
    PlanRequired {
        /// The account's plan.
        plan: Plan,
        /// The plans with API keys.
        required: Vec<Plan>,
    },
    /// The key was rotated already: it has a replacement (409).
    #[error("the key was rotated already")]
    AlreadyRotated,
    /// The account holds as many live keys as it may (409): delete one first.
    #[error("the account holds {max} live keys already, as many as it may")]
    TooManyKeys {
        /// How many it may hold.
        max: usize,
    },
    /// The storage failed (503).
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Every rule of key management, over any [`KeyStorage`].
///
/// Each call checks, in this order: unknown ids ([`NotFound`](ManageError::NotFound)),
/// input ([`Invalid`](ManageError::Invalid), every field at once), plan
/// ([`PlanRequired`](ManageError::PlanRequired)); only then does it write, in one storage
/// call. Clones share the storage.
pub struct KeyManager<S> {
    storage: Arc<S>,
    pub(crate) profile: Profile,
    /// Who the audit log says acted.
    actor: Actor,
}

impl<S> Clone for KeyManager<S> {
    fn clone(&self) -> Self {
        Self {
            storage: self.storage.clone(),
            profile: self.profile.clone(),
            actor: self.actor.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for KeyManager<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyManager")
            .field("storage", &self.storage)
            .finish_non_exhaustive()
    }
}

impl<S: KeyStorage> KeyManager<S> {
    /// A manager of Nouvel's profile over `storage` ([`Profile::key_manager`] for an
    /// application's own).
    pub fn new(storage: S) -> Self {
        Self::with_profile(storage, Profile::nouvel())
    }

    /// [`Profile::key_manager`].
    pub(crate) fn with_profile(storage: S, profile: Profile) -> Self {
        Self {
            storage: Arc::new(storage),
            profile,
            actor: Actor::system(),
        }
    }

    fn now(&self) -> OffsetDateTime {
        self.profile.clock_handle().now()
    }

    /// The same manager, recording `actor` as the one who acts in the audit log (default
    /// [`Actor::system`]). The routers act as the admin or the signed-in user.
    #[must_use]
    pub fn acting_as(mut self, actor: Actor) -> Self {
        self.actor = actor;
        self
    }

    /// An entry of `action` on `account` (and `key`), by this manager's actor, now.
    fn entry(&self, action: AuditAction, account: &AccountId, key: Option<&KeyId>) -> AuditEntry {
        AuditEntry::new(action, account, key, &self.actor, self.now())
    }

    /// A page of the account's audit log, newest first: at most `limit` entries (1 to
    /// 500) older than the cursor `before`, and the cursor of the next page.
    pub async fn audit(
        &self,
        account: &AccountId,
        before: Option<&str>,
        limit: usize,
    ) -> Result<AuditPage, ManageError> {
        self.account(account).await?;
        let limit = limit.clamp(1, MAX_PAGE);
        let mut entries = self.storage.audit(account, before, limit + 1).await?;
        let next = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|entry| entry.id.clone())
        } else {
            None
        };
        Ok(AuditPage { entries, next })
    }

    /// Deletes audit entries older than `max_age` (the retention; default
    /// [`AUDIT_RETENTION`](super::AUDIT_RETENTION), 400 days); how many. Run it from the
    /// application's maintenance, daily say.
    pub async fn prune_audit(&self, max_age: Duration) -> Result<u64, ManageError> {
        let cutoff = self.now() - max_age;
        Ok(self.storage.prune_audit(cutoff).await?)
    }

    /// The profile it speaks.
    #[must_use]
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The storage it manages.
    #[must_use]
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Creates an account.
    pub async fn create_account(&self, name: &str, plan: Plan) -> Result<Account, ManageError> {
        let account = self.prepare_account(name, &plan)?;
        self.insert_account(account).await
    }

    /// Writes an account made by [`prepare_account`](Self::prepare_account).
    pub(crate) async fn insert_account(&self, account: Account) -> Result<Account, ManageError> {
        let audit = self.entry(AuditAction::AccountCreated, &account.id, None);
        self.storage.insert_account(&account, &audit).await?;
        Ok(account)
    }

    /// The account [`create_account`](Self::create_account) would make, checked.
    pub(crate) fn prepare_account(&self, name: &str, plan: &Plan) -> Result<Account, ManageError> {
        let mut errors = Vec::new();
        let name = valid_name(name).map_err(|e| errors.push(e)).ok();
        let plan = self.known_plan(plan).map_err(|e| errors.push(e)).ok();
        match (name, plan) {
            (Some(name), Some(plan)) if errors.is_empty() => Ok(Account {
                id: random_id("acc_").into(),
                name,
                plan,
                created_at: self.now(),
            }),
            _ => Err(ManageError::Invalid(errors)),
        }
    }

    /// Reads an account.
    pub async fn account(&self, id: &AccountId) -> Result<Account, ManageError> {
        self.storage.account(id).await?.ok_or(ManageError::NotFound)
    }

    /// Changes an account's plan. Its keys follow from the next request on.
    pub async fn set_plan(&self, id: &AccountId, plan: Plan) -> Result<Account, ManageError> {
        let (before, plan) = self.prepare_plan(id, &plan).await?;
        self.change_plan(before, plan).await
    }

    /// Gives `account` `plan`, as [`prepare_plan`](Self::prepare_plan) checked it.
    pub(crate) async fn change_plan(
        &self,
        account: Account,
        plan: Plan,
    ) -> Result<Account, ManageError> {
        let (id, before) = (&account.id, &account);
        let audit = self
            .entry(AuditAction::PlanChanged, id, None)
            .detail("from", before.plan.as_str())
            .detail("to", plan.as_str());
        self.storage
            .set_plan(id, plan, &audit)
            .await?
            .ok_or(ManageError::NotFound)
    }

    /// The account as it is and the plan [`set_plan`](Self::set_plan) would give it,
    /// checked: an unknown account first, then the plan.
    pub(crate) async fn prepare_plan(
        &self,
        id: &AccountId,
        plan: &Plan,
    ) -> Result<(Account, Plan), ManageError> {
        let before = self.account(id).await?;
        let plan = self
            .known_plan(plan)
            .map_err(|e| ManageError::Invalid(vec![e]))?;
        Ok((before, plan))
    }

    /// Makes a key. The plaintext is in the result and nowhere else, ever.
    pub async fn create_key(
        &self,
        account: &AccountId,
        spec: KeySpec,
    ) -> Result<NewKey, ManageError> {
        let draft = self.prepare_key(account, &spec).await?;
        self.commit(draft).await
    }

    /// The account's keys, newest first; deleted keys are left out.
    pub async fn keys(&self, account: &AccountId) -> Result<Vec<KeyInfo>, ManageError> {
        self.listed(account, None).await
    }

    /// The account's keys for `environment`, newest first.
    pub async fn keys_in(
        &self,
        account: &AccountId,
        environment: &Environment,
    ) -> Result<Vec<KeyInfo>, ManageError> {
        self.listed(account, Some(environment)).await
    }

    pub(crate) async fn listed(
        &self,
        account: &AccountId,
        environment: Option<&Environment>,
    ) -> Result<Vec<KeyInfo>, ManageError> {
        let plan = self.account(account).await?.plan;
        let now = self.now();
        let mut keys = self.storage.keys(account).await?;
        if let Some(environment) = environment {
            keys.retain(|key| key.environment.as_ref() == Some(environment));
        }
        // Newest first; keys made in one instant by id, so the order is stable.
        keys.sort_unstable_by(|a, b| (b.created_at, &b.id).cmp(&(a.created_at, &a.id)));
        let activity = self.activity(account, &plan, Some(&keys)).await?;
        Ok(keys
            .into_iter()
            .map(|key| self.info(key, &plan, now, &activity))
            .collect())
    }

    /// A page of the account's keys (for `environment` if given), newest first: at most
    /// `limit` (1 to 500) keys older than the cursor `before`, and the cursor of the next
    /// page. A cursor not of this list is [`Invalid`](ManageError::Invalid) on `before`.
    pub async fn key_page(
        &self,
        account: &AccountId,
        environment: Option<&Environment>,
        before: Option<&str>,
        limit: usize,
    ) -> Result<KeyPage, ManageError> {
        let keys = self.listed(account, environment).await?;
        let start = match before {
            None => 0,
            Some(cursor) => {
                let (created_at, id) = cursor
                    .split_once('.')
                    .and_then(|(nanos, id)| Some((nanos.parse::<i128>().ok()?, id)))
                    .ok_or_else(|| {
                        ManageError::Invalid(vec![FieldError::new(
                            "before",
                            "is not a cursor of this list",
                        )])
                    })?;
                // Newest first: the page starts at the first key older than the cursor's.
                keys.partition_point(|key| {
                    (key.created_at.unix_timestamp_nanos(), key.id.as_str()) >= (created_at, id)
                })
            }
        };
        let limit = limit.clamp(1, MAX_PAGE);
        let mut keys: Vec<KeyInfo> = keys.into_iter().skip(start).collect();
        let next = (keys.len() > limit).then(|| {
            keys.truncate(limit);
            let last = &keys[limit - 1];
            format!("{}.{}", last.created_at.unix_timestamp_nanos(), last.id)
        });
        Ok(KeyPage { keys, next })
    }

    /// One key of the account.
    pub async fn key(&self, account: &AccountId, key: &KeyId) -> Result<KeyInfo, ManageError> {
        let stored = self.stored_key(account, key).await?;
        let plan = self.account(account).await?.plan;
        let activity = self.activity(account, &plan, None).await?;
        Ok(self.info(stored, &plan, self.now(), &activity))
    }

    /// A key's usage by `granularity` over `[from, to)`, each rounded down to the start of
    /// its bucket: every bucket in time order, zeros included. By default the 24 hours
    /// ending with the current hour's end, or the 30 days ending with today's; at most 840
    /// hourly or 400 daily buckets, and `from` before `to` (else
    /// [`Invalid`](ManageError::Invalid) on `from`).
    pub async fn usage(
        &self,
        account: &AccountId,
        key: &KeyId,
        granularity: Granularity,
        from: Option<OffsetDateTime>,
        to: Option<OffsetDateTime>,
    ) -> Result<KeyUsage, ManageError> {
        self.stored_key(account, key).await?;
        let (default_buckets, max_buckets) = match granularity {
            Granularity::Hour => (24, 840),
            Granularity::Day => (30, 400),
        };
        let length = granularity.length();
        let to = granularity.start_of(to.unwrap_or_else(|| self.now() + length));
        let from = from.map_or(to - length * default_buckets, |at| granularity.start_of(at));
        if from >= to {
            return Err(ManageError::Invalid(vec![FieldError::new(
                "from",
                "must be before `to`",
            )]));
        }
        let count = (to - from).whole_seconds() / i64::try_from(length.as_secs()).unwrap_or(1);
        if count > i64::from(max_buckets) {
            return Err(ManageError::Invalid(vec![FieldError::new(
                "from",
                format!(
                    "the range holds {count} {} buckets; at most {max_buckets}",
                    granularity.as_str()
                ),
            )]));
        }
        let stored = self.storage.usage(key, granularity, from, to).await?;
        let mut stored = stored.into_iter().peekable();
        let mut buckets = Vec::new();
        let mut start = from;
        while start < to {
            let mut bucket = UsageBucket::new(start);
            while let Some(kept) = stored.next_if(|b| b.start < start + length) {
                bucket.add(&kept);
            }
            buckets.push(bucket);
            start += length;
        }
        Ok(KeyUsage {
            key_id: key.clone(),
            granularity,
            from,
            to,
            buckets,
        })
    }

    /// Deletes a key: it answers 401 from the next request on.
    pub async fn delete_key(&self, account: &AccountId, key: &KeyId) -> Result<(), ManageError> {
        let audit = self.entry(AuditAction::KeyDeleted, account, Some(key));
        match self.storage.delete_key(account, key, &audit).await? {
            true => Ok(()),
            false => Err(ManageError::NotFound),
        }
    }

    /// Disables a key: it answers 401 `disabled_api_key` from the next request on, and
    /// still lists (`disabled`). Disabling a disabled key changes nothing.
    pub async fn disable_key(
        &self,
        account: &AccountId,
        key: &KeyId,
    ) -> Result<KeyInfo, ManageError> {
        self.set_disabled(account, key, true).await
    }

    /// Enables a disabled key again; an expired key stays expired.
    pub async fn enable_key(
        &self,
        account: &AccountId,
        key: &KeyId,
    ) -> Result<KeyInfo, ManageError> {
        self.set_disabled(account, key, false).await
    }

    /// Records that a secret scanner found `key` in public at `url` (a place of kind
    /// `source`), and disables it if `disable`: an audit entry `key.exposed` and its event,
    /// with `url` and `source` (each cut to its first 2 048 characters). `Ok(true)` if it
    /// is marked now, `Ok(false)` if it was before (nothing more is written: a report
    /// repeated changes nothing). The audit log names the actor this manager
    /// [acts as](Self::acting_as): the scanner.
    ///
    /// # Errors
    ///
    /// [`NotFound`](ManageError::NotFound) for no such live key; `Backend`.
    pub async fn expose_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        url: &str,
        source: &str,
        disable: bool,
    ) -> Result<bool, ManageError> {
        let cut = |text: &str| text.chars().take(2048).collect::<String>();
        let exposure = Exposure {
            url: cut(url),
            source: cut(source),
            at: self.now(),
        };
        let audit = self
            .entry(AuditAction::KeyExposed, account, Some(key))
            .detail("url", exposure.url.as_str())
            .detail("source", exposure.source.as_str())
            .detail("disabled", disable);
        let marked = self
            .storage
            .expose_key(account, key, &exposure, disable, &audit)
            .await?;
        if marked.is_some() {
            return Ok(true);
        }
        match self.storage.key(account, key).await? {
            Some(_) => Ok(false),
            None => Err(ManageError::NotFound),
        }
    }

    async fn set_disabled(
        &self,
        account: &AccountId,
        key: &KeyId,
        disabled: bool,
    ) -> Result<KeyInfo, ManageError> {
        let action = if disabled {
            AuditAction::KeyDisabled
        } else {
            AuditAction::KeyEnabled
        };
        let audit = self.entry(action, account, Some(key));
        let stored = self
            .storage
            .set_disabled(account, key, disabled, &audit)
            .await?
            .ok_or(ManageError::NotFound)?;
        let plan = self.account(account).await?.plan;
        let activity = self.activity(account, &plan, None).await?;
        Ok(self.info(stored, &plan, self.now(), &activity))
    }

    /// Replaces a key: a new key with the same name, permissions (or fewer: see
    /// [`Rotation::permissions`]), environment and limit, and an expiration counted from
    /// now (see [`Rotation`]); the old one keeps working for the
    /// rotation's grace (zero: it stops now; at most a year), then answers 401
    /// `expired_api_key`. Its expiration becomes the end of the grace, unless it expires
    /// sooner anyway.
    pub async fn rotate_key(
        &self,
        account: &AccountId,
        key: &KeyId,
        rotation: impl Into<Rotation>,
    ) -> Result<NewKey, ManageError> {
        let draft = self
            .prepare_rotation(account, key, &rotation.into())
            .await?;
        self.commit(draft).await
    }

    /// The key [`create_key`](Self::create_key) would make, checked: an unknown account
    /// first, then every field of `spec` at once, then the plan and the account's key cap.
    pub(crate) async fn prepare_key(
        &self,
        account: &AccountId,
        spec: &KeySpec,
    ) -> Result<KeyDraft, ManageError> {
        let account = self.account(account).await?;
        let now = self.now();
        let draft = self.draft(&account, spec, now)?;
        if let Some(max) = self.profile.max_keys() {
            let keys = self.storage.keys(&account.id).await?;
            let live = keys
                .iter()
                .filter(|key| key.replaced_by.is_none() && key.expires_at.is_none_or(|at| at > now))
                .count();
            if live >= max {
                return Err(ManageError::TooManyKeys { max });
            }
        }
        Ok(draft)
    }

    /// The replacement [`rotate_key`](Self::rotate_key) would make, checked: an unknown
    /// key first, then one rotated already, then every field at once, then the plan.
    pub(crate) async fn prepare_rotation(
        &self,
        account: &AccountId,
        key: &KeyId,
        rotation: &Rotation,
    ) -> Result<KeyDraft, ManageError> {
        let old = self.stored_key(account, key).await?;
        if old.replaced_by.is_some() {
            return Err(ManageError::AlreadyRotated);
        }
        let account = self.account(account).await?;
        let now = self.now();
        let mut errors = Vec::new();
        if rotation.grace > MAX_GRACE {
            errors.push(FieldError::new(
                "grace",
                format!("must be at most {} seconds (one year)", MAX_GRACE.as_secs()),
            ));
        }
        let expiration = match rotation.expiration {
            Some(expiration) => expiration,
            None => old
                .expiration
                .renewed(old.created_at, now)
                .unwrap_or_else(|error| {
                    errors.push(FieldError::new("expiration", error.to_string()));
                    old.expiration
                }),
        };
        let permissions = match rotation.permissions {
            None => old.permissions,
            Some(narrowed) => {
                let beyond: Vec<&str> = narrowed
                    .iter()
                    .filter(|&p| !old.permissions.contains(p))
                    .map(Permission::as_str)
                    .collect();
                if !beyond.is_empty() {
                    errors.push(FieldError::new(
                        "permissions",
                        format!("not held by the old key: {}", beyond.join(", ")),
                    ));
                }
                narrowed
            }
        };
        let spec = KeySpec {
            name: old.name,
            permissions,
            expiration,
            environment: old.environment,
            rate_limits: old.rate_limits,
            allowed_networks: rotation
                .allowed_networks
                .clone()
                .unwrap_or(old.allowed_networks),
        };
        let mut draft = match self.draft(&account, &spec, now) {
            Err(ManageError::Invalid(own)) => {
                FieldError::add(&mut errors, own);
                return Err(ManageError::Invalid(errors));
            }
            _ if !errors.is_empty() => return Err(ManageError::Invalid(errors)),
            draft => draft?,
        };
        // Old and new keys count in one window, so a grace period never doubles the limit.
        draft.stored.shares_limit_with = Some(old.shares_limit_with.unwrap_or(old.id.clone()));
        draft.replaces = Some((old.id, now + rotation.grace));
        Ok(draft)
    }

    /// Writes a key made by [`prepare_key`](Self::prepare_key) or
    /// [`prepare_rotation`](Self::prepare_rotation), in one storage call with its audit entry.
    pub(crate) async fn commit(&self, draft: KeyDraft) -> Result<NewKey, ManageError> {
        let KeyDraft {
            key,
            stored,
            plan,
            now,
            replaces,
        } = draft;
        match replaces {
            None => {
                let audit = self.created(&stored);
                self.storage.insert_key(&stored, &audit).await?;
            }
            Some((old, ends_at)) => {
                let audit = self
                    .entry(AuditAction::KeyRotated, &stored.account_id, Some(&old))
                    .detail("replacement_id", stored.id.as_str());
                if !self
                    .storage
                    .replace_key(&old, ends_at, &stored, &audit)
                    .await?
                {
                    // Deleted meanwhile, or replaced by a rotation that ran beside this one.
                    let now_stored = self.stored_key(&stored.account_id, &old).await?;
                    return Err(match now_stored.replaced_by {
                        Some(_) => ManageError::AlreadyRotated,
                        None => ManageError::NotFound,
                    });
                }
            }
        }
        // A new key has done nothing yet, but its quotas may have counted requests already
        // (its rotation chain's, its account's). The key is written: a failed read only
        // leaves those counts out, it never hides the key its owner sees this once.
        let has_quota = self
            .profile
            .limits_of(&plan, stored.rate_limits)
            .iter()
            .any(|limit| limit.window().is_none());
        let activity = if has_quota {
            let read = self.activity(&stored.account_id, &plan, None).await;
            read.unwrap_or_default()
        } else {
            Activity::default()
        };
        Ok(NewKey {
            info: self.info(stored, &plan, now, &activity),
            key,
        })
    }

    /// The entry of `key`'s creation: what it may do, never what opens it.
    fn created(&self, key: &StoredKey) -> AuditEntry {
        let permissions: Vec<&str> = key.permissions.iter().map(Permission::as_str).collect();
        self.entry(AuditAction::KeyCreated, &key.account_id, Some(&key.id))
            .detail("name", key.name.as_str())
            .detail("permissions", permissions)
            .detail(
                "environment",
                key.environment.as_ref().map(Environment::as_str),
            )
    }

    /// A key of an account on `plan` as its owner sees it at `now`, with its effective
    /// limit.
    fn info(
        &self,
        key: StoredKey,
        plan: &Plan,
        now: OffsetDateTime,
        activity: &Activity,
    ) -> KeyInfo {
        let used: Vec<(Permission, OffsetDateTime)> = activity
            .permissions
            .iter()
            .filter(|(id, _, _)| *id == key.id)
            .map(|(_, permission, at)| (*permission, *at))
            .collect();
        let recent: Vec<UsageBucket> = activity
            .hours
            .iter()
            .filter(|(id, _)| *id == key.id)
            .map(|(_, bucket)| *bucket)
            .collect();
        let limits = self
            .profile
            .limits_of(plan, key.rate_limits)
            .iter()
            .map(|limit| LimitInfo {
                limit,
                quota: limit.period_at(now).map(|(start, end)| QuotaUse {
                    used: quota_used(&key, limit, start, activity),
                    resets_at: end,
                }),
            })
            .collect();
        KeyInfo::new(key, &self.profile, limits, now, &used, &recent)
    }

    /// What the account's keys (`keys`, or all if `None`) did lately, for their hints and
    /// quotas: each permission's last use, the current and previous hours, and the days of
    /// the month if a key has a quota.
    async fn activity(
        &self,
        account: &AccountId,
        plan: &Plan,
        keys: Option<&[StoredKey]>,
    ) -> Result<Activity, ManageError> {
        let hour = Granularity::Hour;
        let now = self.now();
        let this_hour = hour.start_of(now);
        let read;
        let keys = if let Some(keys) = keys {
            keys
        } else {
            read = self.storage.keys(account).await?;
            &read
        };
        let keys: Vec<(KeyId, KeyId, RateLimits)> = keys
            .iter()
            .map(|key| {
                let limit_id = key
                    .shares_limit_with
                    .clone()
                    .unwrap_or_else(|| key.id.clone());
                (
                    key.id.clone(),
                    limit_id,
                    self.profile.limits_of(plan, key.rate_limits),
                )
            })
            .collect();
        // The days of this month hold every quota's current period (a day's or the month's).
        let has_quota = keys
            .iter()
            .any(|(_, _, limits)| limits.iter().any(|limit| limit.window().is_none()));
        let days = match RateLimit::per_month(1).period_at(now) {
            Some((start, end)) if has_quota => {
                self.storage
                    .account_usage(account, Granularity::Day, start, end)
                    .await?
            }
            _ => Vec::new(),
        };
        Ok(Activity {
            permissions: self.storage.permissions_last_used(account).await?,
            hours: self
                .storage
                .account_usage(
                    account,
                    hour,
                    this_hour - hour.length(),
                    this_hour + hour.length(),
                )
                .await?,
            days,
            keys,
        })
    }

    fn known_plan(&self, plan: &Plan) -> Result<Plan, FieldError> {
        self.profile
            .plans()
            .parse(plan.as_str())
            .map_err(|e| FieldError::new("plan", e.to_string()))
    }

    async fn stored_key(&self, account: &AccountId, key: &KeyId) -> Result<StoredKey, ManageError> {
        self.storage
            .key(account, key)
            .await?
            .ok_or(ManageError::NotFound)
    }

    /// A new key for `account` from `spec`, checked at `now`: every field first, then the
    /// plan.
    fn draft(
        &self,
        account: &Account,
        spec: &KeySpec,
        now: OffsetDateTime,
    ) -> Result<KeyDraft, ManageError> {
        let (name, expires_at) = spec
            .validate(self.profile.permissions(), now)
            .map_err(ManageError::Invalid)?;
        if !self.profile.plans().allows_api_keys(&account.plan) {
            return Err(ManageError::PlanRequired {
                plan: account.plan.clone(),
                required: self
                    .profile
                    .plans()
                    .with_api_keys()
                    .unwrap_or_default()
                    .to_vec(),
            });
        }
        let key = self.profile.prefix().generate();
        let stored = StoredKey {
            id: random_id("key_").into(),
            account_id: account.id.clone(),
            name,
            prefix: key.display_prefix().to_owned(),
            digest: self.storage.digest(&key),
            permissions: spec.permissions,
            expiration: spec.expiration,
            rate_limits: spec.rate_limits,
            created_at: now,
            expires_at,
            last_used_at: None,
            usage: Usage::default(),
            replaced_by: None,
            disabled: false,
            environment: spec.environment.clone(),
            shares_limit_with: None,
            exposure: None,
            allowed_networks: spec.allowed_networks.clone(),
        };
        Ok(KeyDraft {
            key,
            stored,
            plan: account.plan.clone(),
            now,
            replaces: None,
        })
    }
}

/// What an account's keys did lately, as the hints read it.
#[derive(Default)]
struct Activity {
    permissions: Vec<(KeyId, Permission, OffsetDateTime)>,
    hours: Vec<(KeyId, UsageBucket)>,
    /// The daily buckets of the current month, when a key of the account has a quota.
    days: Vec<(KeyId, UsageBucket)>,
    /// The account's keys: each one's id, the id its limits count under, its limits.
    keys: Vec<(KeyId, KeyId, RateLimits)>,
}

/// The requests `key` admitted under the quota `limit` since `start`, as the stores have
/// recorded them: the key's own and its rotation chain's for a quota per key, every key's
/// whose limits hold it for a quota per account.
fn quota_used(
    key: &StoredKey,
    limit: RateLimit,
    start: OffsetDateTime,
    activity: &Activity,
) -> u64 {
    let limit_id = key.shares_limit_with.as_ref().unwrap_or(&key.id);
    let counts = |id: &KeyId| match limit.scope() {
        Scope::Key => {
            id == &key.id
                || id == limit_id
                || activity
                    .keys
                    .iter()
                    .any(|(held, under, _)| held == id && under == limit_id)
        }
        Scope::Account => activity
            .keys
            .iter()
            .any(|(held, _, limits)| held == id && limits.iter().any(|l| l.counts_like(limit))),
    };
    activity
        .days
        .iter()
        .filter(|(id, bucket)| bucket.start >= start && counts(id))
        .map(|(_, bucket)| bucket.admitted)
        .sum()
}

/// A key checked and ready to write: what [`KeyManager::commit`] stores.
pub(crate) struct KeyDraft {
    key: ApiKey,
    stored: StoredKey,
    /// The account's plan, for the key's effective limit.
    plan: Plan,
    now: OffsetDateTime,
    /// The key it replaces and when that one stops, for a rotation.
    replaces: Option<(KeyId, OffsetDateTime)>,
}
