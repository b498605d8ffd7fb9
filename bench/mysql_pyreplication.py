"""The python-mysql-replication reader of bench/mysql.rs.

Streams the binlog of the server in CDC_BRIDGE_MYSQL_URL from START_FILE:START_POS, decodes
every row of the WRITE/UPDATE/DELETE rows events (reading each row's values) and stops at
END_FILE:END_POS or at the end of the binlog. Prints the number of row changes read and of
non-null values seen.

is_mariadb stays off: in the library (1.0.17) it only selects MariaDB GTID positioning, which
ignores log_file/log_pos, and such a stream was reset by the server after a binlog rotation
here. File and position positioning works on MariaDB as it is.

    python mysql_pyreplication.py START_FILE START_POS END_FILE END_POS
"""

import os
import sys
from urllib.parse import unquote, urlsplit

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent


def rank(file, pos):
    """Binlog positions ordered by file sequence number, then offset."""
    return int(file.rsplit(".", 1)[1]), pos


def main():
    start_file, start_pos, end_file, end_pos = sys.argv[1:5]
    end = rank(end_file, int(end_pos))
    url = urlsplit(os.environ["CDC_BRIDGE_MYSQL_URL"])
    settings = {
        "host": url.hostname,
        "port": url.port or 3306,
        "user": unquote(url.username),
        "password": unquote(url.password or ""),
    }
    stream = BinLogStreamReader(
        connection_settings=settings,
        server_id=5492,
        resume_stream=True,
        log_file=start_file,
        log_pos=int(start_pos),
        blocking=False,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
    )
    rows = values = 0
    for event in stream:
        for row in event.rows:
            # Insert/delete rows have "values", update rows "before_values"/"after_values".
            for image in row.values():
                values += sum(1 for value in image.values() if value is not None)
            rows += 1
        if rank(stream.log_file, stream.log_pos) >= end:
            break
    stream.close()
    print(rows, values)


if __name__ == "__main__":
    main()
