//! T13 and the environment: what crosses the boundary. A 100 MB result is refused (and not
//! kept); the environment holds exactly the granted variables.

use safeformers_sandbox::{Grants, Limits, SandboxError};

use crate::{assert_healthy, call, json, quick_limits, sandbox, tool};

#[test]
fn a_100_mb_result_is_refused() {
    for output_bytes in [Limits::DEFAULT.output_bytes, Limits::HARD_MAX.output_bytes] {
        let limits = Limits {
            output_bytes,
            ..quick_limits()
        };
        let outcome = call(
            &sandbox(),
            &tool("big_output"),
            &Grants::default(),
            &limits,
            "{}",
        );
        assert!(
            matches!(outcome, Err(SandboxError::ResultTooLarge { limit }) if limit == output_bytes),
            "{:?}",
            outcome.map(|output| output.result.map(|text| text.len()))
        );
    }
    assert_healthy();
}

#[test]
fn a_result_at_the_limit_is_kept() {
    let limits = Limits {
        output_bytes: 5,
        ..quick_limits()
    };
    let echo = tool("echo");
    let output = call(&sandbox(), &echo, &Grants::default(), &limits, "12345").unwrap();
    assert_eq!(output.result, Ok("12345".to_owned()));
    let outcome = call(&sandbox(), &echo, &Grants::default(), &limits, "123456");
    assert!(matches!(
        outcome,
        Err(SandboxError::ResultTooLarge { limit: 5 })
    ));
    // The limit covers the tool's error text too.
    let outcome = call(
        &sandbox(),
        &echo,
        &Grants::default(),
        &limits,
        &json("err", "123456"),
    );
    assert!(matches!(
        outcome,
        Err(SandboxError::ResultTooLarge { limit: 5 })
    ));
}

#[test]
fn only_granted_environment_variables_are_visible() {
    assert!(
        std::env::var_os("PATH").is_some(),
        "the test needs a host variable to hide"
    );
    let grants = Grants {
        env: vec![("GREETING".to_owned(), "hello".to_owned())],
        ..Grants::default()
    };
    let env = tool("env");
    let ask = |grants: &Grants, name: &str| {
        call(
            &sandbox(),
            &env,
            grants,
            &quick_limits(),
            &json("name", name),
        )
        .unwrap()
        .result
    };
    assert_eq!(ask(&grants, "GREETING"), Ok("hello".to_owned()));
    assert_eq!(ask(&grants, "PATH"), Err("absent".to_owned()));
    assert_eq!(ask(&grants, "HOME"), Err("absent".to_owned()));
    assert_eq!(ask(&grants, "*"), Ok("GREETING".to_owned()));
    assert_eq!(ask(&Grants::default(), "*"), Ok(String::new()));
}

#[test]
fn bad_environment_grants_are_refused() {
    for name in ["", "A=B", "NUL\0"] {
        let grants = Grants {
            env: vec![(name.to_owned(), "x".to_owned())],
            ..Grants::default()
        };
        let outcome = call(&sandbox(), &tool("env"), &grants, &quick_limits(), "{}");
        assert!(
            matches!(outcome, Err(SandboxError::Grant { .. })),
            "{name:?}: {outcome:?}"
        );
    }
}
