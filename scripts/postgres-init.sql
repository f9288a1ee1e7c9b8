-- Run once by the postgres image on an empty volume: the test suite and the benchmarks
-- use a database named "test" beside the ledger's own "subledger".
CREATE DATABASE test;
