-- Option negotiation with a given protocol version, then one simple transaction.
--   miltertest -D socket=inet:PORT@127.0.0.1 -D version=2|4|6 -D scriptdir=DIR/ -s negotiate.lua
-- The MTA offers what Postfix offers for that milter_protocol (PROTOCOL.md 5.1):
-- all nine actions, and protocol steps 0x7F (v2), 0x37F (v4) or 0x1FFFFF (v6).
dofile(scriptdir .. "common.lua")

function main()
	local v = tonumber(version)
	check(v ~= nil, "run with -D version=N")
	local steps = { [2] = 0x7F, [3] = 0x17F, [4] = 0x37F, [6] = 0x1FFFFF }
	check(steps[v] ~= nil, "unsupported version " .. tostring(v))
	local actions = SMFIF_ADDHDRS + SMFIF_CHGBODY + SMFIF_ADDRCPT + SMFIF_DELRCPT + SMFIF_CHGHDRS
		+ SMFIF_QUARANTINE + SMFIF_CHGFROM + SMFIF_ADDRCPT_PAR + SMFIF_SETSYMLIST

	local conn = open_milter()
	-- miltertest 1.6.0 reads mt.negotiate's 3rd argument as the protocol steps and the
	-- 4th as the actions, the other way round from its manual page.
	step("negotiate", mt.negotiate(conn, v, steps[v], actions), conn)

	-- The milter uses header edits, so it must have asked for them.
	check(mt.test_action(conn, SMFIF_ADDHDRS), "ADDHDRS not requested")
	check(mt.test_action(conn, SMFIF_CHGHDRS), "CHGHDRS not requested")
	-- It must not ask for steps the MTA did not offer (no-reply bits before v6).
	if v < 6 then
		for _, bit in ipairs({ SMFIP_NR_CONN, SMFIP_NR_HELO, SMFIP_NR_HDR, SMFIP_NR_MAIL,
		                       SMFIP_NR_RCPT, SMFIP_SKIP, SMFIP_RCPT_REJ }) do
			check(not mt.test_option(conn, bit), "protocol bit " .. bit .. " requested but not offered")
		end
	else
		-- With v6 the feature milter's @noreply callbacks become real no-reply steps.
		check(mt.test_option(conn, SMFIP_NR_CONN), "NR_CONN not requested with v6")
		check(mt.test_option(conn, SMFIP_NR_HDR), "NR_HDR not requested with v6")
	end

	step("conninfo", mt.conninfo(conn, "client.example.test", "192.0.2.10"), conn,
	     reply_unless(conn, SMFIP_NR_CONN, SMFIR_CONTINUE))
	step("helo", mt.helo(conn, "client.example.test"), conn,
	     reply_unless(conn, SMFIP_NR_HELO, SMFIR_CONTINUE))
	mt.macro(conn, SMFIC_MAIL, "i", "QID" .. v, "{mail_addr}", "sender@example.test")
	step("mailfrom", mt.mailfrom(conn, "<sender@example.test>"), conn, SMFIR_CONTINUE)
	step("rcptto ok", mt.rcptto(conn, "<ok@example.test>"), conn, SMFIR_CONTINUE)
	step("rcptto reject", mt.rcptto(conn, "<reject@example.test>"), conn, SMFIR_REPLYCODE)
	step("rcptto tempfail", mt.rcptto(conn, "<tempfail@example.test>"), conn, SMFIR_TEMPFAIL)
	step("header From", mt.header(conn, "From", "sender@example.test"), conn,
	     reply_unless(conn, SMFIP_NR_HDR, SMFIR_CONTINUE))
	step("header Subject", mt.header(conn, "Subject", "version " .. v), conn,
	     reply_unless(conn, SMFIP_NR_HDR, SMFIR_CONTINUE))
	step("eoh", mt.eoh(conn), conn, SMFIR_CONTINUE)
	step("body", mt.bodystring(conn, "Hello, version " .. v .. ".\r\n"), conn, SMFIR_CONTINUE)
	step("eom", mt.eom(conn), conn, SMFIR_CONTINUE)

	check(mt.eom_check(conn, MT_HDRADD, "X-Feature-Rcpts", "ok@example.test"),
	      "X-Feature-Rcpts: ok@example.test not added")
	local client = mt.getheader(conn, "X-Feature-Client", 0)
	check(client ~= nil and string.find(client, "AF_INET ('192.0.2.10', ", 1, true) == 1,
	      "connect() got " .. tostring(client))
	local macros = mt.getheader(conn, "X-Feature-Macros", 0)
	check(macros ~= nil and string.find(macros, "i=QID" .. v, 1, true) ~= nil,
	      "macro i not seen: " .. tostring(macros))
	check(not mt.eom_check(conn, MT_BODYCHANGE), "body changed but nobody asked")

	mt.disconnect(conn)
	mt.echo("OK negotiate version " .. v)
end

run(main)
