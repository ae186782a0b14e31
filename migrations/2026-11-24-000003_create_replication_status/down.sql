DROP TABLE replication_status;
