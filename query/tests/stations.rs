//! What the registry says about stacks and analysers reaches analysts and
//! officers through `ListStations`, against the real PostgreSQL: a limit's
//! reference O₂ and each instrument's calibration and inspection dates, as
//! the processor's registry write stored them.

mod common;

use common::*;
use quantrac_db::access::Role;
use quantrac_proto::v1::ListStationsRequest;

const STACK: &str = r#"
[[stations]]
id = "S-1"
name = "Boiler stack"
facility = "Biomass boiler"
industrial_zone = "KCN Test"
province = "Phú Yên"
latitude = 13.0
longitude = 109.3
kind = "stack"
parameters = [
  { code = "O2",  unit = "%",      range_min = 0, range_max = 25 },
  { code = "SO2", unit = "mg/Nm3", range_min = 0, range_max = 2000 },
]
limits = [
  { parameter = "SO2", max = 500, regulation = "QCVN 19:2009/BTNMT", column = "B", effective_from = 2026-01-01, reference_o2 = 6 },
]
[[stations.instruments]]
name = "CEMS SO2/O2, SN 21-0457"
parameters = ["SO2", "O2"]
calibrated_on = 2026-09-15
calibration_valid_to = 2027-03-14
inspected_on = 2026-04-20
inspection_valid_to = 2027-04-19
"#;

#[tokio::test]
async fn stations_show_the_reference_o2_and_the_instruments_certificates() {
    let mut f = Fixture::new().await;
    let registry = quantrac_proto::registry::Registry::from_toml(&format!("{REGISTRY}{STACK}"))
        .expect("registry");
    quantrac_db::registry::sync(&mut f.db, &registry)
        .await
        .expect("sync");
    let analyst = f.token(Role::Analyst).await;
    let stations = f
        .client()
        .await
        .list_stations(with_token(&analyst, ListStationsRequest::default()))
        .await
        .expect("stations")
        .into_inner()
        .stations;
    let stack = stations
        .iter()
        .find(|s| s.station.as_ref().is_some_and(|x| x.id == "S-1"))
        .expect("S-1");
    assert_eq!(stack.limits.len(), 1);
    assert_eq!(
        (
            stack.limits[0].parameter.as_str(),
            stack.limits[0].reference_o2
        ),
        ("SO2", Some(6.0))
    );
    assert_eq!(stack.instruments.len(), 1);
    let i = &stack.instruments[0];
    assert_eq!(
        (
            i.name.as_str(),
            i.parameters.clone(),
            i.calibrated_on.as_str(),
            i.calibration_valid_to.as_str(),
            i.inspected_on.as_str(),
            i.inspection_valid_to.as_str()
        ),
        (
            "CEMS SO2/O2, SN 21-0457",
            vec!["SO2".to_string(), "O2".to_string()],
            "2026-09-15",
            "2027-03-14",
            "2026-04-20",
            "2027-04-19"
        )
    );
    // A wastewater station: no reference, no instruments registered.
    let q1 = stations
        .iter()
        .find(|s| s.station.as_ref().is_some_and(|x| x.id == "Q-1"))
        .expect("Q-1");
    assert!(q1.limits.iter().all(|l| l.reference_o2.is_none()));
    assert!(q1.instruments.is_empty());
}
