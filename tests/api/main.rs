//! API tests against the real runtime. One `wrangler dev` serves every test
//! (each on its own SKU ids); the tests run concurrently; the durability
//! test then stops the server and starts it again on the same state.
//!
//! A custom harness (`harness = false`) so the server is started once and
//! always stopped. It prints one line per test and `N passed, N failed`.

mod app;
mod automations;
// The native tests' support (their seedable Rng, for the kill test).
mod browser;
mod buckets;
mod channels;
#[path = "../common/mod.rs"]
mod common;
mod concurrency;
mod durability;
mod errors;
mod harness;
mod hostile;
mod jobs;
mod kill;
mod limits;
mod live;
mod openapi;
mod order_index;
mod orders;
#[path = "../platform/mod.rs"]
mod platform;
mod receiver;
mod replenish;
mod risk;
mod stock;
mod trust;
mod webhooks;

use app::App;
use futures::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

/// How many of the concurrent tests run at a time.
const TESTS_AT_ONCE: usize = 10;

type TestFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Test = (&'static str, fn(App) -> TestFuture);

macro_rules! tests {
    ($($module:ident :: $name:ident),* $(,)?) => {
        vec![$((
            concat!(stringify!($module), "::", stringify!($name)),
            (|app| Box::pin($module::$name(app))) as fn(App) -> TestFuture,
        )),*]
    };
}

fn concurrent_tests() -> Vec<Test> {
    tests![
        stock::a_sku_is_set_up_and_read_back,
        automations::automations_act_on_orders_and_say_so,
        automations::bad_automation_input_is_a_problem_and_changes_nothing,
        jobs::a_jobs_progress_comes_over_its_feed,
        stock::a_sku_never_set_up_is_not_found,
        stock::reserve_then_commit_moves_units_to_sold,
        stock::release_returns_units_and_a_second_release_changes_nothing,
        stock::a_resolved_hold_refuses_the_other_resolution,
        stock::storefront_reads_are_cached_briefly_and_see_their_writes,
        buckets::a_split_sku_sells_exactly_its_units_under_concurrent_load,
        buckets::a_split_sku_stays_split_and_merging_back_brings_units_home,
        buckets::a_limited_sku_splits_only_before_it_sells,
        stock::holds_expire_by_alarm_with_no_traffic,
        stock::an_expired_hold_cannot_be_committed,
        stock::the_purchase_limit_counts_holds_and_purchases,
        stock::restock_and_adjustments_are_recorded_in_the_ledger,
        stock::refused_stock_changes_leave_the_sku_as_it_was,
        stock::the_ledger_pages,
        stock::the_audit_recomputes_the_counters_from_ledger_and_holds,
        errors::admin_routes_need_the_right_token,
        errors::bad_input_is_a_problem_and_changes_nothing,
        errors::unknown_routes_and_methods_are_problems,
        errors::unknown_holds_are_not_found,
        concurrency::a_retry_with_the_same_key_returns_the_same_answer,
        concurrency::a_reused_key_with_another_body_is_refused,
        concurrency::concurrent_retries_apply_once,
        orders::an_order_goes_from_reserved_to_delivered,
        orders::an_order_that_cannot_be_filled_holds_nothing,
        orders::unpaid_orders_expire_by_alarm,
        orders::paying_finds_an_at_payment_sku_sold_out,
        orders::cancelling_and_refunding_return_stock,
        orders::creating_and_paying_are_idempotent_under_concurrent_retries,
        orders::bad_order_input_is_a_problem,
        openapi::every_documented_operation_answers_as_documented,
        live::a_sku_feed_sends_a_snapshot_then_each_change_in_version_order,
        live::a_live_route_needs_a_websocket_upgrade,
        live::a_viewer_resumes_from_the_version_it_saw,
        live::a_room_feed_shows_its_products_in_order_and_its_orders,
        live::a_room_is_spread_over_feed_shards_and_every_viewer_gets_each_change,
        live::pushes_during_a_room_setup_are_kept,
        live::an_order_feed_sees_reserved_paid_shipped,
        live::origins_are_checked,
        live::oversize_and_flooding_viewers_are_cut_off_alone,
        live::a_full_feed_turns_a_viewer_away_with_a_reason,
        trust::buyers_touch_only_their_own_holds,
        trust::orders_and_order_lists_are_their_buyers,
        trust::only_a_signed_callback_pays,
        trust::strangers_cannot_reach_an_orders_hold_or_its_saga_keys,
        trust::an_admin_acts_for_a_named_buyer,
        limits::a_buyer_is_limited_and_a_retry_is_not_a_new_attempt,
        limits::an_order_retry_over_the_limit_gets_its_order,
        limits::a_buyer_holds_at_most_the_cap_across_skus,
        limits::a_burst_past_the_hold_cap_is_given_back,
        risk::a_buyer_ordering_too_fast_is_reviewed,
        risk::a_buyer_whose_orders_keep_expiring_is_reviewed,
        webhooks::stock_and_order_notices_arrive_signed_once_and_in_order,
        webhooks::failed_deliveries_are_retried_with_backoff_logged_and_resent,
        webhooks::bad_webhook_input_is_a_problem_and_changes_nothing,
        replenish::the_reorder_point_makes_one_request_that_restocks_once,
        replenish::a_selling_sku_says_when_it_will_sell_out,
        replenish::a_rooms_numbers_count_its_orders_once,
        channels::a_live_sale_on_three_platforms_sells_exactly_on_hand,
        channels::allocation_gives_each_channel_its_share,
        channels::a_failing_platform_is_retried_and_sees_the_last_number,
        channels::bad_channel_input_is_a_problem_and_changes_nothing,
        channels::the_skus_deduction_mode_governs_platform_orders,
        channels::pushes_keep_to_the_platforms_rate,
        order_index::a_rooms_orders_are_found_paged_and_exported,
        order_index::bad_order_queries_are_problems,
        jobs::bad_job_input_is_a_problem,
        jobs::a_carriers_signed_update_delivers,
    ]
}

/// Load tests, each run alone after the others: together they would only
/// measure wrangler dev's proxy, and would skew the timing of alarm tests.
fn heavy_tests() -> Vec<Test> {
    tests![
        concurrency::a_stampede_of_500_on_100_units_sells_exactly_100,
        orders::two_hundred_two_line_orders_race_over_fifty_units,
        jobs::a_sessions_paid_orders_ship_in_bulk_once,
        live::a_burst_is_coalesced_and_ends_on_the_true_number,
        browser::the_storefront_and_console_work_in_chromium,
        browser::the_kit_works_on_a_shop_of_another_origin,
        browser::the_orders_page_fulfils_a_session_in_chromium,
        // Alone: it compares the objects' files before and after.
        live::nothing_is_stored_for_what_was_never_set_up,
        // Alone: it writes the merchant's rule set, which every order meets.
        risk::rules_are_checked_versioned_data_that_review_and_deny,
        // Alone: 2,000 attempts in one rate-limit window.
        limits::an_address_is_limited_generously,
        // Alone: its raw-socket bodies go through the dev proxy.
        hostile::hostile_inputs_are_problems_and_change_nothing,
    ]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (passed, failed) = runtime.block_on(run());
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
    // A name filter that matches nothing is a mistake, not a pass.
    if passed == 0 {
        eprintln!("no test ran: does the filter name one?");
        std::process::exit(1);
    }
}

async fn run() -> (usize, usize) {
    harness::build();
    let token = format!(
        "test-{:x}",
        app::now_ms() ^ u64::from(std::process::id()) << 20
    );
    let secrets = harness::Secrets {
        admin: token.clone(),
        session: format!("{token}-sessions"),
        payment: format!("{token}-payments"),
        // A fresh Ed25519 seed per run (the public key is read back from
        // the server, never derived here).
        ledger: format!(
            "{:064x}",
            u128::from(std::process::id()) << 64 | app::now_ms() as u128
        ),
    };
    let mut server = harness::Server::new(&secrets);
    server.start().await;
    let app = App {
        base: server.base(),
        token,
        session_secret: secrets.session.clone(),
        payment_secret: secrets.payment.clone(),
        owners: Default::default(),
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(app::IN_FLIGHT_MAX)
            // No request waits forever: a lost answer is an error (a keyed
            // one is sent again), not a hung test run.
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .expect("client"),
        in_flight: std::sync::Arc::new(tokio::sync::Semaphore::new(app::IN_FLIGHT_MAX)),
        address: app::unique_address(),
        viewer: app::unique("v"),
    };
    let app_for_test = |app: &App| App {
        address: app::unique_address(),
        viewer: app::unique("v"),
        ..app.clone()
    };

    let mut outcomes = Vec::new();
    // `cargo test --test api -- <text>` runs the tests whose names contain it.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let selected = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    // At most this many tests at once: all of them together (80 and
    // more) overload wrangler dev's proxy on two cores (plain 503s, reset
    // connections, webhook receivers timing out), which tests nothing of
    // edgestock's.
    let at_once = std::sync::Arc::new(tokio::sync::Semaphore::new(TESTS_AT_ONCE));
    let handles: Vec<_> = concurrent_tests()
        .into_iter()
        .filter(|(name, _)| selected(name))
        .map(|(name, test)| {
            let app = app_for_test(&app);
            let at_once = at_once.clone();
            let run = async move {
                let _turn = at_once.acquire_owned().await.expect("semaphore open");
                test(app).await
            };
            (name, tokio::spawn(AssertUnwindSafe(run).catch_unwind()))
        })
        .collect();
    for (name, handle) in handles {
        let ok = matches!(handle.await, Ok(Ok(())));
        report(name, ok);
        outcomes.push(ok);
    }

    for (name, test) in heavy_tests().into_iter().filter(|(name, _)| selected(name)) {
        let ok = tokio::spawn(AssertUnwindSafe(test(app_for_test(&app))).catch_unwind())
            .await
            .is_ok_and(|r| r.is_ok());
        report(name, ok);
        outcomes.push(ok);
    }

    // Sequential: this one restarts the server.
    if selected("durability::state_survives_a_restart") {
        let ok = AssertUnwindSafe(durability::state_survives_a_restart(
            app.clone(),
            &mut server,
        ))
        .catch_unwind()
        .await
        .is_ok();
        report("durability::state_survives_a_restart", ok);
        outcomes.push(ok);
    }
    const RESTART_HOOKS: &str = "webhooks::undelivered_notices_survive_a_restart";
    if selected(RESTART_HOOKS) {
        let ok = AssertUnwindSafe(webhooks::undelivered_notices_survive_a_restart(
            app.clone(),
            &mut server,
        ))
        .catch_unwind()
        .await
        .is_ok();
        report(RESTART_HOOKS, ok);
        outcomes.push(ok);
    }
    const RESTART_JOB: &str = "jobs::a_bulk_job_survives_a_restart";
    if selected(RESTART_JOB) {
        let ok = AssertUnwindSafe(jobs::a_bulk_job_survives_a_restart(
            app.clone(),
            &mut server,
        ))
        .catch_unwind()
        .await
        .is_ok();
        report(RESTART_JOB, ok);
        outcomes.push(ok);
    }
    server.stop();

    // Last, alone: it runs its own bare workerd and kills it.
    const KILL: &str = "kill::killed_at_random_it_loses_nothing_and_doubles_nothing";
    if selected(KILL) {
        let ok = AssertUnwindSafe(kill::killed_at_random_it_loses_nothing_and_doubles_nothing(
            &app, &secrets,
        ))
        .catch_unwind()
        .await
        .is_ok();
        report(KILL, ok);
        outcomes.push(ok);
    }

    let failed = outcomes.iter().filter(|ok| !**ok).count();
    if failed > 0 {
        eprintln!("server log: {}", server.log.display());
    }
    (outcomes.len() - failed, failed)
}

fn report(name: &str, ok: bool) {
    println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
}
