"""The benchmarks: `profiles bench` (`suite`), naive Faust as its baseline (`naive_faust`),
`profiles bench-jobs` (`jobs`), the columnar core against the reference (`columnar`), and
writing their sections into BENCHMARKS.md (`report_file`)."""
