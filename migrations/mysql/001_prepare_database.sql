-- Prepares a MySQL 8 or MariaDB 10.11 server for cdc-bridge's binlog source. Run as root:
--   mysql -uroot -p app < migrations/mysql/001_prepare_database.sql
-- Safe to run again. Change the password.
--
-- Server settings (my.cnf, or the command line as in docker-compose.yml):
--   server_id = 1                  -- any id unique among the server's replicas
--   log_bin = mysql-bin            -- binary logging on
--   binlog_format = ROW            -- row events, not statements
--   binlog_row_image = FULL        -- whole rows before and after each change
--   binlog_row_metadata = FULL     -- column names and signedness in the binlog (MySQL 8, MariaDB 10.5+);
--                                  -- without it they are read from information_schema (see the README)
--   log_bin_compress = OFF (MariaDB), binlog_transaction_compression = OFF (MySQL)
--   gtid_mode = ON, enforce_gtid_consistency = ON   -- MySQL: resume by GTID (MariaDB always has GTIDs)

CREATE USER IF NOT EXISTS 'cdc_bridge'@'%' IDENTIFIED BY 'change-me';
-- Reading the binlog as a replica, the server's binlog state, and the rows for the snapshot.
-- (On MariaDB, REPLICATION CLIENT is also known as BINLOG MONITOR.)
GRANT REPLICATION SLAVE, REPLICATION CLIENT, SELECT, RELOAD, SHOW DATABASES ON *.* TO 'cdc_bridge'@'%';
