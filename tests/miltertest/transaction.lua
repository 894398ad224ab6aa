-- A full protocol-6 session: every end-of-message edit, a custom reply, an
-- aborted transaction and a second message on the same connection.
--   miltertest -D socket=inet:PORT@127.0.0.1 -D scriptdir=DIR/ -s transaction.lua
dofile(scriptdir .. "common.lua")

function main()
	local conn = open_milter()
	-- Everything offered, as sendmail 8.14+ and Postfix 2.6+ do (steps, then actions:
	-- see negotiate.lua).
	step("negotiate", mt.negotiate(conn, 6, 0x1FFFFF, 0x1FF), conn)
	check(mt.test_option(conn, SMFIP_NR_CONN), "connect() is @noreply: NR_CONN expected")
	step("conninfo", mt.conninfo(conn, "client6.example.test", "2001:db8::25"), conn,
	     reply_unless(conn, SMFIP_NR_CONN, SMFIR_CONTINUE))
	step("helo", mt.helo(conn, "client6.example.test"), conn,
	     reply_unless(conn, SMFIP_NR_HELO, SMFIR_CONTINUE))

	-- Message 1: aborted after its recipients.
	step("mailfrom 1", mt.mailfrom(conn, "<aborted@example.test>"), conn, SMFIR_CONTINUE)
	step("rcptto 1", mt.rcptto(conn, "<gone@example.test>"), conn, SMFIR_CONTINUE)
	step("abort", mt.abort(conn), conn)

	-- Message 2: every edit.
	mt.macro(conn, SMFIC_MAIL, "i", "QID2")
	step("mailfrom 2", mt.mailfrom(conn, "<sender@example.test>"), conn, SMFIR_CONTINUE)
	for _, r in ipairs({ "addheader", "body", "addrcpt", "delrcpt", "chgfrom", "delheader" }) do
		step("rcptto " .. r, mt.rcptto(conn, "<" .. r .. "@example.test>"), conn, SMFIR_CONTINUE)
	end
	step("rcptto reject-multi", mt.rcptto(conn, "<reject-multi@example.test>"), conn,
	     SMFIR_REPLYCODE)
	for _, h in ipairs({ { "From", "sender@example.test" }, { "Subject", "original" },
	                     { "X-Remove-Me", "one" }, { "X-Remove-Me", "two" } }) do
		step("header " .. h[1], mt.header(conn, h[1], h[2]), conn,
		     reply_unless(conn, SMFIP_NR_HDR, SMFIR_CONTINUE))
	end
	step("eoh", mt.eoh(conn), conn, SMFIR_CONTINUE)
	step("body", mt.bodystring(conn, "original body\r\n"), conn, SMFIR_CONTINUE)
	step("eom", mt.eom(conn), conn, SMFIR_CONTINUE)

	check(mt.eom_check(conn, MT_HDRINSERT, "X-Feature-Top", "inserted at index 0", 0),
	      "X-Feature-Top not inserted at 0")
	check(mt.eom_check(conn, MT_HDRINSERT, "X-Feature-Second", "inserted at index 1", 1),
	      "X-Feature-Second not inserted at 1")
	check(mt.eom_check(conn, MT_HDRADD, "X-Feature-Aborted", "gone@example.test"),
	      "the aborted transaction's recipient not reported")
	check(mt.eom_check(conn, MT_HDRADD, "X-Feature-Msgno", "1"), "message number not 1")
	check(mt.eom_check(conn, MT_HDRADD, "X-Feature-From", "sender@example.test"),
	      "sender of the aborted transaction leaked")
	check(mt.eom_check(conn, MT_BODYCHANGE,
	                   "This body was replaced by the milter.\r\nSecond line.\r\n"),
	      "body not replaced")
	check(mt.eom_check(conn, MT_RCPTADD, "<added@example.test>"), "added@ not added")
	-- (miltertest's MT_RCPTADD only looks at ADDRCPT, not ADDRCPT_PAR: added-par@ is not
	-- visible to it; the MTA tests check it.)
	check(mt.eom_check(conn, MT_RCPTDELETE, "<victim@example.test>"), "victim@ not deleted")
	check(mt.eom_check(conn, MT_HDRDELETE, "X-Remove-Me"), "X-Remove-Me not deleted")
	check(mt.eom_check(conn, MT_HDRCHANGE, "Subject", "subject changed by the milter"),
	      "Subject not changed")
	local client = mt.getheader(conn, "X-Feature-Client", 0)
	check(client ~= nil and string.find(client, "AF_INET6 ('2001:db8::25', ", 1, true) == 1,
	      "connect() got " .. tostring(client))

	-- Message 3 on the same connection: fresh per-message state, no edits.
	step("mailfrom 3", mt.mailfrom(conn, "<third@example.test>"), conn, SMFIR_CONTINUE)
	step("rcptto 3", mt.rcptto(conn, "<plain@example.test>"), conn, SMFIR_CONTINUE)
	step("eoh 3", mt.eoh(conn), conn, SMFIR_CONTINUE)
	step("body 3", mt.bodystring(conn, "third\r\n"), conn, SMFIR_CONTINUE)
	step("eom 3", mt.eom(conn), conn, SMFIR_CONTINUE)
	check(mt.eom_check(conn, MT_HDRADD, "X-Feature-Msgno", "2"), "message number not 2")
	check(mt.eom_check(conn, MT_HDRADD, "X-Feature-Rcpts", "plain@example.test"),
	      "recipients of message 2 leaked into message 3")
	check(mt.eom_check(conn, MT_HDRADD, "X-Feature-Aborted", "none"), "stale abort report")
	check(not mt.eom_check(conn, MT_BODYCHANGE), "body changed in message 3")
	check(not mt.eom_check(conn, MT_RCPTADD, "<added@example.test>"),
	      "recipient added in message 3")

	-- A rejected message: the custom reply of the EOM.
	step("mailfrom 4", mt.mailfrom(conn, "<fourth@example.test>"), conn, SMFIR_CONTINUE)
	step("rcptto 4", mt.rcptto(conn, "<reject-eom@example.test>"), conn, SMFIR_CONTINUE)
	step("body 4", mt.bodystring(conn, "fourth\r\n"), conn, SMFIR_CONTINUE)
	step("eom 4", mt.eom(conn), conn, SMFIR_REPLYCODE)
	check(mt.eom_check(conn, MT_SMTPREPLY, "550", "5.7.2", "eom reject"), "eom reply not 550 5.7.2")

	mt.disconnect(conn)
	mt.echo("OK transaction")
end

run(main)
