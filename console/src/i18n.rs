//! Labels in Vietnamese (the default) and English, and times as officers
//! read them: Asia/Ho_Chi_Minh (UTC+7, no daylight saving).

use chrono::{DateTime, Utc};

/// The page's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Vi,
    En,
}

impl Lang {
    pub fn parse(s: &str) -> Option<Lang> {
        match s {
            "vi" => Some(Lang::Vi),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Vi => "vi",
            Lang::En => "en",
        }
    }

    /// The label `key` in this language; an unknown key is shown as itself
    /// (a missing label is visible, not a crash).
    pub fn t(self, key: &'static str) -> &'static str {
        let (vi, en) = match key {
            "title" => (
                "Trung tâm giám sát môi trường",
                "Environmental monitoring center",
            ),
            "alerts" => ("Cảnh báo", "Alerts"),
            "stations" => ("Trạm quan trắc", "Stations"),
            "map" => ("Bản đồ", "Map"),
            "login" => ("Đăng nhập", "Log in"),
            "logout" => ("Đăng xuất", "Log out"),
            "token" => ("Mã truy cập", "Access token"),
            "token_help" => (
                "Mã do quản trị viên cấp (quantrac token issue).",
                "Issued by an administrator (quantrac token issue).",
            ),
            "bad_token" => (
                "Mã truy cập không hợp lệ hoặc đã hết hạn.",
                "The access token is not valid or has expired.",
            ),
            "read_only" => (
                "Vai trò phân tích: chỉ xem, không thao tác.",
                "Analyst role: read only.",
            ),
            "zone" => ("Khu công nghiệp", "Industrial zone"),
            "station" => ("Trạm", "Station"),
            "rule" => ("Quy tắc", "Rule"),
            "severity" => ("Mức độ", "Severity"),
            "state" => ("Trạng thái", "State"),
            "parameter" => ("Thông số", "Parameter"),
            "value" => ("Giá trị", "Value"),
            "limit" => ("Giới hạn", "Limit"),
            "since" => ("Từ lúc", "Since"),
            "updated" => ("Cập nhật", "Updated"),
            "assignee" => ("Người phụ trách", "Assigned to"),
            "message" => ("Nội dung", "Message"),
            "any" => ("Tất cả", "Any"),
            "filter" => ("Lọc", "Filter"),
            "active_unacked" => ("Đang mở, chưa xác nhận", "Active and unacknowledged"),
            "all_alerts" => ("Tất cả cảnh báo", "All alerts"),
            "open" => ("Đang mở", "Open"),
            "acknowledged" => ("Đã xác nhận", "Acknowledged"),
            "resolved" => ("Đã xử lý", "Resolved"),
            "info" => ("Thông tin", "Info"),
            "warning" => ("Cảnh báo sớm", "Warning"),
            "critical" => ("Nghiêm trọng", "Critical"),
            "total" => ("Tổng", "Total"),
            "unacknowledged" => ("Chưa xác nhận", "Unacknowledged"),
            "by_state" => ("Theo trạng thái", "By state"),
            "by_severity" => ("Theo mức độ", "By severity"),
            "by_rule" => ("Theo quy tắc", "By rule"),
            "acknowledge" => ("Xác nhận", "Acknowledge"),
            "acknowledge_selected" => ("Xác nhận các mục đã chọn", "Acknowledge selected"),
            "resolve" => ("Đóng cảnh báo", "Resolve"),
            "assign" => ("Giao cho", "Assign"),
            "comment" => ("Bình luận", "Comment"),
            "reason" => ("Lý do", "Reason"),
            "officer" => ("Cán bộ", "Officer"),
            "history" => ("Lịch sử", "History"),
            "export" => ("Xuất", "Export"),
            "no_alerts" => ("Không có cảnh báo nào.", "No alerts."),
            "live" => ("Trực tiếp", "Live"),
            "online" => ("Trực tuyến", "Online"),
            "late" => ("Chậm", "Late"),
            "silent" => ("Mất kết nối", "Silent"),
            "never" => ("Chưa có dữ liệu", "No data yet"),
            "last_seen" => ("Lần cuối", "Last seen"),
            "latest" => ("Giá trị mới nhất", "Latest values"),
            "chart_24h" => ("24 giờ qua", "Last 24 hours"),
            "camera" => ("Camera", "Camera"),
            "reachable" => ("Kết nối được", "Reachable"),
            "unreachable" => ("Không kết nối được", "Unreachable"),
            "no_camera" => ("Chưa khai báo camera", "No camera registered"),
            "flagged" => ("Bị gắn cờ", "Flagged"),
            "saturated" => (
                "Vượt thang đo (giá trị tối thiểu)",
                "Above range (a lower bound)",
            ),
            "gap" => ("Mất dữ liệu", "Gap"),
            "readings" => ("Số liệu", "Readings"),
            "error" => ("Lỗi", "Error"),
            "refused" => ("Không được phép", "Not allowed"),
            "done" => ("Đã ghi nhận", "Done"),
            "select_all" => ("Chọn tất cả", "Select all"),
            "facility" => ("Cơ sở", "Facility"),
            "hourly_averages" => ("Trung bình giờ", "Hourly averages"),
            "maintenance" => ("Bảo trì theo kế hoạch", "Planned maintenance"),
            "no_maintenance" => ("Không có lịch bảo trì.", "No maintenance planned."),
            "plan_maintenance" => ("Lên lịch bảo trì", "Plan maintenance"),
            "starts" => ("Bắt đầu", "Starts"),
            "hours" => ("Số giờ", "Hours"),
            "kind" => ("Loại", "Kind"),
            "wastewater" => ("Nước thải", "Wastewater"),
            "stack" => ("Khí thải", "Stack"),
            "unavailable" => (
                "Dịch vụ tạm thời không trả lời; thử lại sau.",
                "A service is not answering; try again shortly.",
            ),
            _ => (key, key),
        };
        match self {
            Lang::Vi => vi,
            Lang::En => en,
        }
    }
}

/// A protobuf time in local time; empty when unset.
pub fn local_ts(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(quantrac_proto::domain::from_timestamp)
        .map(local_time)
        .unwrap_or_default()
}

/// `2026-12-06 13:05` in local time.
pub fn local_time(t: DateTime<Utc>) -> String {
    t.with_timezone(&quantrac_proto::domain::local_offset())
        .format("%Y-%m-%d %H:%M")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vietnamese_by_default_and_times_in_utc_plus_7() {
        assert_eq!(Lang::Vi.t("acknowledge"), "Xác nhận");
        assert_eq!(Lang::En.t("acknowledge"), "Acknowledge");
        assert_eq!(Lang::En.t("no_such_label"), "no_such_label");
        let t = DateTime::from_timestamp(1_780_000_000, 0).expect("t"); // 2026-05-28 20:26:40Z
        assert_eq!(local_time(t), "2026-05-29 03:26");
    }
}
